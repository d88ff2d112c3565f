# The KVM probe guest: one BIOS boot sector that does what a real boot does before the
# first console line (firmware and boot loaders such as OVMF and ISOLINUX), so a KVM that
# runs it can run them too. It executes x87 (`finit`: fwait + fninit, bytes 9b db e3, the
# instruction a present-but-broken KVM fails on), enables SSE and runs SSE instructions,
# switches to 32-bit protected mode, builds identity page tables, enters 64-bit long mode,
# runs x87 and SSE again there, and only then writes `K` to the serial port and leaves QEMU
# through isa-debug-exit (iobase 0xf4) with status (0x10 << 1) | 1 = 0x21.
#
# src/qemu/kvm-probe.bin is this file assembled; the test `kvm_probe_bin_matches_source`
# assembles it again (GNU as and ld from binutils) and compares:
#   as --32 -o probe.o kvm-probe.S && ld -m elf_i386 -Ttext 0x7c00 --oformat binary -o kvm-probe.bin probe.o

        .code16
        .text
        .globl _start
_start:
        cli
        xorw    %ax, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movw    $0x7c00, %sp

        # x87 in real mode.
        finit
        fld1
        fistps  scratch

        # SSE: CR0.EM off, CR0.MP on, CR4.OSFXSR and OSXMMEXCPT on.
        movl    %cr0, %eax
        andw    $0xfffb, %ax
        orw     $0x0002, %ax
        movl    %eax, %cr0
        movl    %cr4, %eax
        orw     $0x0600, %ax
        movl    %eax, %cr4
        xorps   %xmm0, %xmm0
        addps   %xmm0, %xmm0

        # 32-bit protected mode.
        lgdtl   gdtr
        movl    %cr0, %eax
        orb     $1, %al
        movl    %eax, %cr0
        ljmpl   $0x08, $protected

        .code32
protected:
        movw    $0x10, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        # Identity-map the first 2 MiB: PML4 at 0x1000, PDPT at 0x2000, PD at 0x3000.
        movl    $0x1000, %edi
        xorl    %eax, %eax
        movl    $3072, %ecx
        rep stosl
        movl    $0x2003, 0x1000
        movl    $0x3003, 0x2000
        movl    $0x0083, 0x3000
        movl    $0x1000, %eax
        movl    %eax, %cr3
        movl    %cr4, %eax
        orl     $0x20, %eax             # PAE
        movl    %eax, %cr4
        movl    $0xc0000080, %ecx       # EFER
        rdmsr
        orl     $0x100, %eax            # LME
        wrmsr
        movl    %cr0, %eax
        orl     $0x80000000, %eax       # paging: long mode is active
        movl    %eax, %cr0
        ljmpl   $0x18, $long

        .code64
long:
        finit
        fld1
        fistps  scratch(%rip)
        xorps   %xmm1, %xmm1
        addps   %xmm1, %xmm1
        movw    $0x3f8, %dx
        movb    $'K', %al
        outb    %al, %dx
        movw    $0xf4, %dx
        movb    $0x10, %al
        outb    %al, %dx
halt:
        hlt
        jmp     halt

        .p2align 3
gdt:
        .quad   0
        .quad   0x00cf9a000000ffff      # 0x08: 32-bit code
        .quad   0x00cf92000000ffff      # 0x10: data
        .quad   0x00af9a000000ffff      # 0x18: 64-bit code
gdtr:
        .word   gdtr - gdt - 1
        .long   gdt
scratch:
        .word   0

        .org    510
        .word   0xaa55

# imgbuild's everyday commands, one imgbuild command each (docs/CLI.md has every flag).
# `just` lists them. IMGBUILD names the imgbuild to run (default: cargo run --release).
# `just` is not a Debian package: `cargo install just --locked` (scripts/test installs it
# into ~/.cache/imgbuild/just for the full tier).

imgbuild := env_var_or_default("IMGBUILD", "cargo run --quiet --release --bin imgbuild --")

# List the recipes.
default:
    @{{just_executable()}} --list --unsorted

# Build, load and run the enhanced origin (imgbuild-init as PID 1), until `docker rm -f`.
enhanced-origin profile="default":
    {{imgbuild}} up origin {{profile}} container --init

# Build the origin container image and load it into docker.
main-container profile="default":
    {{imgbuild}} container origin/{{profile}} -o - | docker load

# Build the bootable origin ISO (./hls-origin-<profile>.iso).
iso profile="default":
    {{imgbuild}} iso origin/{{profile}}

# Build the origin MicroVM directory (./hls-origin-<profile>.microvm).
microvm profile="default":
    {{imgbuild}} microvm origin/{{profile}}

# Build and run: `just up`, `just up run`, `just up swarm stress run`, `just up default iso`.
up *words:
    {{imgbuild}} up {{words}}

# The test suite: `just test` (quick tier) or `just test full`.
test tier="quick":
    scripts/test {{tier}}

//! Byte counts as text, in one place: for people (`1.5 MiB`) and in the units of the deploy
//! files (compose `10M`, Kubernetes `96Mi`).

/// A byte count for people: `512 B`, `1.5 KiB`, `2.0 GiB` (GiB at most).
pub fn human(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// A compose byte size in MiB, rounded up (`10M`; compose's units are binary).
pub fn compose(bytes: u64) -> String {
    format!("{}M", bytes.div_ceil(1 << 20))
}

/// A Kubernetes quantity in binary mebibytes, rounded up (`96Mi`).
pub fn mebibytes(bytes: u64) -> String {
    format!("{}Mi", bytes.div_ceil(1 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
        assert_eq!(human(2048 << 30), "2048.0 GiB");
        assert_eq!(compose((10 << 20) - 1), "10M");
        assert_eq!(mebibytes((96 << 20) + 1), "97Mi");
    }
}

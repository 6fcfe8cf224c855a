//! Small helpers the benchmarks share.

/// The middle of `values` (the upper of the two middle ones for an even count), `None` for
/// none. Benchmarks measure a few rounds in turn with their reference and report medians, so
/// one round caught in the machine's moment does not set the figure.
#[must_use]
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn the_middle_value_whatever_the_order() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0]), Some(3.0));
        assert_eq!(median(vec![9.0, 1.0, 5.0]), Some(5.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(3.0));
    }
}

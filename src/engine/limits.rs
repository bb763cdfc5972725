//! Named limits on model configs, checked when a config is read and before any tensor is sized
//! from it: zero sizes (divisions by zero), absurd sizes (allocations of terabytes) and products
//! that overflow become one `BadConfig` error naming the file and the field.

/// Widest dimension accepted (hidden sizes, channels, vocabularies): 2²⁰.
pub const MAX_DIMENSION: usize = 1 << 20;
/// Most layers or blocks of one kind.
pub const MAX_LAYERS: usize = 1024;

/// A config that can say what is wrong with it.
pub trait Validated {
    fn validate(&self) -> Result<(), String>;
}

/// Collects the problems of one config.
#[derive(Default)]
pub struct Limits {
    problems: Vec<String>,
}

impl Limits {
    pub fn new() -> Self {
        Self::default()
    }

    /// `value` in 1..=`max`.
    pub fn size(&mut self, field: &str, value: usize, max: usize) -> &mut Self {
        if value == 0 || value > max {
            self.problems
                .push(format!("{field} {value} is outside 1–{max}"));
        }
        self
    }

    /// A dimension: 1..=MAX_DIMENSION.
    pub fn dimension(&mut self, field: &str, value: usize) -> &mut Self {
        self.size(field, value, MAX_DIMENSION)
    }

    /// `value` divides into `parts` equal parts (e.g. a width into attention heads).
    pub fn splits(
        &mut self,
        field: &str,
        value: usize,
        parts_field: &str,
        parts: usize,
    ) -> &mut Self {
        if parts == 0 || !value.is_multiple_of(parts) {
            self.problems.push(format!(
                "{field} {value} does not split into {parts_field} {parts}"
            ));
        }
        self
    }

    /// A finite number in `range` (e.g. a layer-norm epsilon in (0, 1)).
    pub fn number(&mut self, field: &str, value: f64, low: f64, high: f64) -> &mut Self {
        if !value.is_finite() || value <= low || value > high {
            self.problems
                .push(format!("{field} {value} is outside ({low}, {high}]"));
        }
        self
    }

    /// The product of `values` stays below `max` (e.g. elements of one activation).
    pub fn product(&mut self, field: &str, values: &[usize], max: usize) -> &mut Self {
        let product = values
            .iter()
            .try_fold(1usize, |product, value| product.checked_mul(*value));
        if product.is_none_or(|product| product > max) {
            self.problems.push(format!("{field} is too large"));
        }
        self
    }

    pub fn problem(&mut self, problem: String) -> &mut Self {
        self.problems.push(problem);
        self
    }

    pub fn finish(&mut self) -> Result<(), String> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(self.problems.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_named_and_joined() {
        let error = Limits::new()
            .size("n_head", 0, 64)
            .splits("n_embd", 10, "n_head", 3)
            .number("eps", -1.0, 0.0, 1.0)
            .product("table", &[usize::MAX, 2], 1 << 30)
            .finish()
            .unwrap_err();
        for needle in [
            "n_head 0",
            "n_embd 10 does not split",
            "eps -1",
            "table is too large",
        ] {
            assert!(error.contains(needle), "{error}");
        }
        assert!(Limits::new().dimension("width", 64).finish().is_ok());
    }
}

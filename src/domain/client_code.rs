//! Client codes: `CL-YYYYMM-NNNN`, numbered per month from a counter row (the client insert
//! takes and moves it: `store::clients::insert_clients`), never from `MAX()+1`.

/// Formats a code. Past 9,999 clients in a month the number simply grows a digit
/// (`CL-202401-10000`), which still fits the column and still sorts within its month by length.
/// The client insert writes its codes in SQL the same way; a test holds the two together.
pub fn client_code(year_month: &str, seq: i32) -> String {
    format!("CL-{year_month}-{seq:04}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_zero_padded_to_four_digits() {
        assert_eq!(client_code("202401", 1), "CL-202401-0001");
        assert_eq!(client_code("202412", 42), "CL-202412-0042");
        assert_eq!(client_code("202412", 10000), "CL-202412-10000");
    }
}

//! One-dimensional arrays in PostgreSQL's binary format, for the parameters
//! chorus binds itself (log rows appended on the leader and copied on
//! followers, captured rows).

use bytes::BufMut;

/// An array of `elem_oid` values (`None`: NULL), each already in binary form.
pub fn binary_array<'a>(elem_oid: u32, items: impl ExactSizeIterator<Item = Option<&'a [u8]>> + Clone) -> Vec<u8> {
    let size: usize = items.clone().map(|i| 4 + i.map_or(0, <[u8]>::len)).sum();
    let mut b = Vec::with_capacity(20 + size);
    b.put_i32(1);
    b.put_i32(items.clone().any(|i| i.is_none()) as i32);
    b.put_u32(elem_oid);
    b.put_i32(items.len() as i32);
    b.put_i32(1);
    for i in items {
        match i {
            Some(v) => {
                b.put_i32(v.len() as i32);
                b.put_slice(v);
            }
            None => b.put_i32(-1),
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_postgres_layout() {
        let one = 1i32.to_be_bytes();
        let a = binary_array(23, [Some(&one[..]), None].into_iter());
        let mut want = Vec::new();
        for v in [1i32, 1, 23, 2, 1, 4, 1, -1] {
            want.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(a, want);
    }
}

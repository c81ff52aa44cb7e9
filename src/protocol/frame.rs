//! Request framing: an i32 length then the body; the request header's fixed prefix.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame length {size} outside 0..={size_max_bytes}")]
    Size { size: i32, size_max_bytes: u32 },
    #[error("request shorter than its header")]
    Short,
}

/// Checks a frame's length prefix before anything is allocated for it.
pub fn frame_body_len(prefix: [u8; 4], size_max_bytes: u32) -> Result<usize, FrameError> {
    let size = i32::from_be_bytes(prefix);
    if size < 0 || size as u32 > size_max_bytes {
        return Err(FrameError::Size {
            size,
            size_max_bytes,
        });
    }
    Ok(size as usize)
}

/// The fixed first 8 bytes of every request header (all header versions share them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderPrefix {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

pub fn header_prefix(body: &[u8]) -> Result<HeaderPrefix, FrameError> {
    if body.len() < 8 {
        return Err(FrameError::Short);
    }
    Ok(HeaderPrefix {
        api_key: i16::from_be_bytes([body[0], body[1]]),
        api_version: i16::from_be_bytes([body[2], body[3]]),
        correlation_id: i32::from_be_bytes([body[4], body[5], body[6], body[7]]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lengths_are_bounded_before_allocation() {
        assert_eq!(frame_body_len(0i32.to_be_bytes(), 100), Ok(0));
        assert_eq!(frame_body_len(100i32.to_be_bytes(), 100), Ok(100));
        assert_eq!(
            frame_body_len(101i32.to_be_bytes(), 100),
            Err(FrameError::Size {
                size: 101,
                size_max_bytes: 100
            })
        );
        assert_eq!(
            frame_body_len((-1i32).to_be_bytes(), 100),
            Err(FrameError::Size {
                size: -1,
                size_max_bytes: 100
            })
        );
        assert!(frame_body_len(i32::MAX.to_be_bytes(), 100 << 20).is_err());
    }

    #[test]
    fn header_prefix_needs_eight_bytes() {
        for n in 0..8 {
            assert_eq!(header_prefix(&[0u8; 8][..n]), Err(FrameError::Short));
        }
        let p = header_prefix(&[0, 18, 0, 3, 0, 0, 1, 2]).unwrap();
        assert_eq!(
            p,
            HeaderPrefix {
                api_key: 18,
                api_version: 3,
                correlation_id: 258
            }
        );
    }

    proptest! {
        #[test]
        fn frame_len_never_exceeds_max(prefix in any::<[u8; 4]>(), max in 0u32..(200 << 20)) {
            if let Ok(n) = frame_body_len(prefix, max) { prop_assert!(n as u64 <= u64::from(max)); }
        }
    }
}

//! Argument values and their encoding: big-endian on the wire whatever the
//! byte order of either side, so clients and workers of any architecture
//! understand each other.
//!
//! A call carries the IN and INOUT parameters in declaration order, a
//! reply the OUT and INOUT ones. Each value is a count (u64) followed by
//! its elements; a string is a u32 length and its bytes. The decoder
//! checks every count against the sizes the interface gives (computed
//! from the integer scalars), and against the bytes left, before it
//! allocates anything.

use crate::idl::{DimError, Function, Type};

/// One parameter's value: a scalar is an array of one element.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Char(Vec<u8>),
    Short(Vec<i16>),
    Int(Vec<i32>),
    Long(Vec<i64>),
    Float(Vec<f32>),
    Double(Vec<f64>),
    /// The bytes of a string, without a terminating NUL.
    Str(Vec<u8>),
}

impl Data {
    /// `n` zero elements of type `ty` (an empty string for strings).
    pub fn zeros(ty: Type, n: usize) -> Data {
        match ty {
            Type::Char => Data::Char(vec![0; n]),
            Type::Short => Data::Short(vec![0; n]),
            Type::Int => Data::Int(vec![0; n]),
            Type::Long => Data::Long(vec![0; n]),
            Type::Float => Data::Float(vec![0.0; n]),
            Type::Double => Data::Double(vec![0.0; n]),
            Type::Str => Data::Str(Vec::new()),
        }
    }

    pub fn ty(&self) -> Type {
        match self {
            Data::Char(_) => Type::Char,
            Data::Short(_) => Type::Short,
            Data::Int(_) => Type::Int,
            Data::Long(_) => Type::Long,
            Data::Float(_) => Type::Float,
            Data::Double(_) => Type::Double,
            Data::Str(_) => Type::Str,
        }
    }

    /// Elements (bytes for a string).
    pub fn len(&self) -> usize {
        match self {
            Data::Char(v) | Data::Str(v) => v.len(),
            Data::Short(v) => v.len(),
            Data::Int(v) => v.len(),
            Data::Long(v) => v.len(),
            Data::Float(v) => v.len(),
            Data::Double(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first element as an integer, for dimensions.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Data::Char(v) => v.first().map(|&x| i64::from(x)),
            Data::Short(v) => v.first().map(|&x| i64::from(x)),
            Data::Int(v) => v.first().map(|&x| i64::from(x)),
            Data::Long(v) => v.first().copied(),
            _ => None,
        }
    }

    /// Start of the elements in memory, for the C interfaces.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        match self {
            Data::Char(v) | Data::Str(v) => v.as_mut_ptr(),
            Data::Short(v) => v.as_mut_ptr().cast(),
            Data::Int(v) => v.as_mut_ptr().cast(),
            Data::Long(v) => v.as_mut_ptr().cast(),
            Data::Float(v) => v.as_mut_ptr().cast(),
            Data::Double(v) => v.as_mut_ptr().cast(),
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        if let Data::Str(s) = self {
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s);
            return;
        }
        out.extend_from_slice(&(self.len() as u64).to_be_bytes());
        out.reserve(self.len() * self.ty().size());
        match self {
            Data::Char(v) => out.extend_from_slice(v),
            Data::Short(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_be_bytes())),
            Data::Int(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_be_bytes())),
            Data::Long(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_be_bytes())),
            Data::Float(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_be_bytes())),
            Data::Double(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_be_bytes())),
            Data::Str(_) => unreachable!("handled above"),
        }
    }
}

macro_rules! from_scalar {
    ($t:ty, $v:ident) => {
        impl From<$t> for Data {
            fn from(x: $t) -> Data {
                Data::$v(vec![x])
            }
        }
        impl From<Vec<$t>> for Data {
            fn from(x: Vec<$t>) -> Data {
                Data::$v(x)
            }
        }
    };
}
from_scalar!(i16, Short);
from_scalar!(i32, Int);
from_scalar!(i64, Long);
from_scalar!(f32, Float);
from_scalar!(f64, Double);

impl From<&str> for Data {
    fn from(s: &str) -> Data {
        Data::Str(s.as_bytes().to_vec())
    }
}

/// Why values do not fit an interface.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DataError {
    #[error("{func} takes {want} arguments, got {got}")]
    Arity {
        func: String,
        want: usize,
        got: usize,
    },
    #[error("{func}: argument {param} is {got:?}, the interface says {want:?}")]
    Type {
        func: String,
        param: String,
        want: Type,
        got: Type,
    },
    #[error("{func}: argument {param} has {got} elements, the interface says {want}")]
    Count {
        func: String,
        param: String,
        want: usize,
        got: usize,
    },
    #[error("{func}: {0}", func = .1)]
    Dim(DimError, String),
    #[error("{0} is truncated")]
    Truncated(&'static str),
    #[error("{0} has {1} bytes too many")]
    Trailing(&'static str, usize),
}

/// Which parameters a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// IN and INOUT: a call.
    Call,
    /// OUT and INOUT: a reply.
    Reply,
}

impl Dir {
    fn carries(self, m: crate::idl::Mode) -> bool {
        match self {
            Dir::Call => m.sent(),
            Dir::Reply => m.returned(),
        }
    }
}

/// Element counts of every parameter, from the integer scalars of `args`
/// (one entry per parameter; OUT entries may be anything).
pub fn counts(f: &Function, args: &[Data]) -> Result<Vec<usize>, DataError> {
    let scalar = |i: usize| args.get(i).and_then(Data::as_i64).unwrap_or(0);
    (0..f.params.len())
        .map(|p| {
            f.count(p, &scalar)
                .map_err(|e| DataError::Dim(e, f.name.clone()))
        })
        .collect()
}

/// Checks `args` (one per parameter) against `f` for direction `dir` and
/// encodes the values it carries.
pub fn encode(f: &Function, args: &[Data], dir: Dir, out: &mut Vec<u8>) -> Result<(), DataError> {
    if args.len() != f.params.len() {
        return Err(DataError::Arity {
            func: f.name.clone(),
            want: f.params.len(),
            got: args.len(),
        });
    }
    let n = counts(f, args)?;
    for (i, (p, a)) in f.params.iter().zip(args).enumerate() {
        if !dir.carries(p.mode) {
            continue;
        }
        if a.ty() != p.ty {
            return Err(DataError::Type {
                func: f.name.clone(),
                param: p.name.clone(),
                want: p.ty,
                got: a.ty(),
            });
        }
        if p.ty != Type::Str && a.len() != n[i] {
            return Err(DataError::Count {
                func: f.name.clone(),
                param: p.name.clone(),
                want: n[i],
                got: a.len(),
            });
        }
        a.encode(out);
    }
    Ok(())
}

/// Decodes a call's values into one `Data` per parameter, OUT ones made
/// as zeros of the size the interface gives.
pub fn decode_call(f: &Function, bytes: &[u8]) -> Result<Vec<Data>, DataError> {
    let mut args: Vec<Option<Data>> = vec![None; f.params.len()];
    let mut r = Reader {
        b: bytes,
        what: "call",
    };
    for (i, p) in f.params.iter().enumerate() {
        if p.mode.sent() {
            args[i] = Some(r.value(p.ty)?);
        }
    }
    r.finish()?;
    let known: Vec<Data> = args
        .iter()
        .map(|a| a.clone().unwrap_or(Data::Long(Vec::new())))
        .collect();
    let n = counts(f, &known)?;
    let mut out = Vec::with_capacity(args.len());
    for (i, (p, a)) in f.params.iter().zip(args).enumerate() {
        let d = match a {
            Some(d) => {
                if p.ty != Type::Str && d.len() != n[i] {
                    return Err(DataError::Count {
                        func: f.name.clone(),
                        param: p.name.clone(),
                        want: n[i],
                        got: d.len(),
                    });
                }
                d
            }
            None => Data::zeros(p.ty, n[i]),
        };
        out.push(d);
    }
    Ok(out)
}

/// Decodes a reply's values; `expect` are the counts the call implied.
/// Returns one `Data` per OUT or INOUT parameter, in order.
pub fn decode_reply(f: &Function, expect: &[usize], bytes: &[u8]) -> Result<Vec<Data>, DataError> {
    let mut r = Reader {
        b: bytes,
        what: "reply",
    };
    let mut out = Vec::new();
    for (i, p) in f.params.iter().enumerate() {
        if !p.mode.returned() {
            continue;
        }
        let d = r.value(p.ty)?;
        if d.len() != expect[i] {
            return Err(DataError::Count {
                func: f.name.clone(),
                param: p.name.clone(),
                want: expect[i],
                got: d.len(),
            });
        }
        out.push(d);
    }
    r.finish()?;
    Ok(out)
}

struct Reader<'a> {
    b: &'a [u8],
    what: &'static str,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DataError> {
        if self.b.len() < n {
            return Err(DataError::Truncated(self.what));
        }
        let (a, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(a)
    }
    fn value(&mut self, ty: Type) -> Result<Data, DataError> {
        if ty == Type::Str {
            let n = u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize;
            return Ok(Data::Str(self.take(n)?.to_vec()));
        }
        let n = u64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes"));
        // Never allocate more than the message holds.
        let bytes = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(ty.size()))
            .filter(|&b| b <= self.b.len())
            .ok_or(DataError::Truncated(self.what))?;
        let raw = self.take(bytes)?;
        macro_rules! conv {
            ($t:ty, $w:literal) => {
                raw.chunks_exact($w)
                    .map(|c| <$t>::from_be_bytes(c.try_into().expect("chunk")))
                    .collect()
            };
        }
        Ok(match ty {
            Type::Char => Data::Char(raw.to_vec()),
            Type::Short => Data::Short(conv!(i16, 2)),
            Type::Int => Data::Int(conv!(i32, 4)),
            Type::Long => Data::Long(conv!(i64, 8)),
            Type::Float => Data::Float(conv!(f32, 4)),
            Type::Double => Data::Double(conv!(f64, 8)),
            Type::Str => unreachable!("handled above"),
        })
    }
    fn finish(&self) -> Result<(), DataError> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(DataError::Trailing(self.what, self.b.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idl::parse;

    fn dmmul() -> Function {
        parse("Define dmmul(IN int n, IN double A[n][n], OUT double C[n][n], INOUT long k[2], IN string s)")
            .unwrap()
            .functions
            .remove(0)
    }

    #[test]
    fn calls_and_replies_round_trip_in_big_endian() {
        let f = dmmul();
        let args = vec![
            Data::from(2),
            Data::from(vec![1.0, 2.0, 3.0, 4.5]),
            Data::Double(vec![]),
            Data::from(vec![7i64, -8]),
            Data::from("hé"),
        ];
        let mut b = Vec::new();
        encode(&f, &args, Dir::Call, &mut b).unwrap();
        // n = 2, big-endian, counted.
        assert_eq!(&b[..12], &[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2]);
        let got = decode_call(&f, &b).unwrap();
        assert_eq!(got[0], args[0]);
        assert_eq!(got[1], args[1]);
        assert_eq!(got[2], Data::Double(vec![0.0; 4]));
        assert_eq!(got[3], args[3]);
        assert_eq!(got[4], args[4]);
        let mut reply = got.clone();
        reply[2] = Data::from(vec![9.0, 8.0, 7.0, 6.0]);
        let mut rb = Vec::new();
        encode(&f, &reply, Dir::Reply, &mut rb).unwrap();
        let n = counts(&f, &args).unwrap();
        let outs = decode_reply(&f, &n, &rb).unwrap();
        assert_eq!(outs, vec![reply[2].clone(), reply[3].clone()]);
    }

    #[test]
    fn mismatched_arguments_are_refused() {
        let f = dmmul();
        let mut b = Vec::new();
        let short = vec![Data::from(2)];
        assert!(matches!(
            encode(&f, &short, Dir::Call, &mut b),
            Err(DataError::Arity {
                want: 5,
                got: 1,
                ..
            })
        ));
        let wrong_type = vec![
            Data::from(2),
            Data::from(vec![1.0f32; 4]),
            Data::Double(vec![]),
            Data::from(vec![7i64, -8]),
            Data::from("x"),
        ];
        assert!(matches!(
            encode(&f, &wrong_type, Dir::Call, &mut b),
            Err(DataError::Type { .. })
        ));
        let wrong_count = vec![
            Data::from(3),
            Data::from(vec![1.0; 4]),
            Data::Double(vec![]),
            Data::from(vec![7i64, -8]),
            Data::from("x"),
        ];
        assert!(matches!(
            encode(&f, &wrong_count, Dir::Call, &mut b),
            Err(DataError::Count {
                want: 9,
                got: 4,
                ..
            })
        ));
        let negative = vec![
            Data::from(-3),
            Data::from(vec![1.0; 4]),
            Data::Double(vec![]),
            Data::from(vec![7i64, -8]),
            Data::from("x"),
        ];
        assert!(matches!(
            encode(&f, &negative, Dir::Call, &mut b),
            Err(DataError::Dim(..))
        ));
    }

    #[test]
    fn corrupt_and_truncated_messages_are_refused_without_allocating() {
        let f = dmmul();
        let args = vec![
            Data::from(2),
            Data::from(vec![1.0; 4]),
            Data::Double(vec![]),
            Data::from(vec![7i64, -8]),
            Data::from("x"),
        ];
        let mut b = Vec::new();
        encode(&f, &args, Dir::Call, &mut b).unwrap();
        for cut in 0..b.len() {
            assert!(decode_call(&f, &b[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = b.clone();
        extra.push(0);
        assert!(matches!(
            decode_call(&f, &extra),
            Err(DataError::Trailing("call", 1))
        ));
        // A huge count in the array's header.
        let mut huge = b.clone();
        huge[12..20].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(matches!(
            decode_call(&f, &huge),
            Err(DataError::Truncated(_))
        ));
        // A count that disagrees with n.
        let mut lie = Vec::new();
        let three = vec![
            Data::from(2),
            Data::from(vec![1.0; 4]),
            Data::Double(vec![]),
            Data::from(vec![7i64, -8]),
            Data::from("x"),
        ];
        encode(&f, &three, Dir::Call, &mut lie).unwrap();
        lie[8..12].copy_from_slice(&3i32.to_be_bytes());
        assert!(matches!(
            decode_call(&f, &lie),
            Err(DataError::Count {
                want: 9,
                got: 4,
                ..
            })
        ));
        // A reply with the wrong count.
        let mut rb = Vec::new();
        let mut reply = decode_call(&f, &b).unwrap();
        reply[2] = Data::Double(vec![1.0; 4]);
        encode(&f, &reply, Dir::Reply, &mut rb).unwrap();
        assert!(decode_reply(&f, &[1, 9, 9, 2, 1], &rb).is_err());
    }
}

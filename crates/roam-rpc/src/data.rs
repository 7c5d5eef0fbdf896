//! Argument values and their encoding.
//!
//! A call carries the IN and INOUT parameters in declaration order, a
//! reply the OUT and INOUT ones. Each value is a count (u64, big-endian)
//! followed by its elements; a string is a u32 big-endian length and its
//! bytes. Elements travel in the byte order the two ends agreed on at
//! their handshake ([`Order`]): little-endian when both are, big-endian
//! otherwise, so ends of any byte order understand each other and two
//! little-endian ends (most clusters) send arrays straight from memory,
//! with no conversion.
//!
//! Encoding gives [`Piece`]s: headers, and array bytes borrowed from the
//! caller's values when no conversion is needed. Decoding reads from the
//! stream into the arrays' own memory ([`Body`]), checking every count
//! against the sizes the interface gives (computed from the integer
//! scalars) and against the bytes the frame has left, before it allocates
//! anything.

use std::io::Read;

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

    /// Sets every element to zero (a string to empty).
    pub fn zero(&mut self) {
        match self {
            Data::Char(v) => v.fill(0),
            Data::Short(v) => v.fill(0),
            Data::Int(v) => v.fill(0),
            Data::Long(v) => v.fill(0),
            Data::Float(v) => v.fill(0.0),
            Data::Double(v) => v.fill(0.0),
            Data::Str(v) => v.clear(),
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
    #[error("reading the {0}: {1}")]
    Io(&'static str, String),
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

/// The byte order of array elements on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Big,
    Little,
}

impl Order {
    /// This machine's.
    pub fn native() -> Order {
        if cfg!(target_endian = "little") {
            Order::Little
        } else {
            Order::Big
        }
    }
    /// What two ends with these native orders use: little-endian only when
    /// both are.
    pub fn agree(a: Order, b: Order) -> Order {
        if a == Order::Little && b == Order::Little {
            Order::Little
        } else {
            Order::Big
        }
    }
    pub fn code(self) -> u8 {
        match self {
            Order::Big => 0,
            Order::Little => 1,
        }
    }
    pub fn from_code(c: u8) -> Option<Order> {
        match c {
            0 => Some(Order::Big),
            1 => Some(Order::Little),
            _ => None,
        }
    }
}

/// Part of an encoded message: a header, or array bytes.
#[derive(Debug)]
pub enum Piece<'a> {
    Owned(Vec<u8>),
    /// Straight from a value's memory (no conversion needed).
    Borrowed(&'a [u8]),
}

impl Piece<'_> {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Piece::Owned(v) => v,
            Piece::Borrowed(b) => b,
        }
    }
}

/// The bytes of `v`'s elements in `order`: borrowed when that is how
/// they are in memory.
fn elements<'a, T: bytemuck::Pod>(v: &'a [T], order: Order, swap: fn(T) -> T) -> Piece<'a> {
    if order == Order::native() || std::mem::size_of::<T>() == 1 {
        Piece::Borrowed(bytemuck::cast_slice(v))
    } else {
        let swapped: Vec<T> = v.iter().map(|&x| swap(x)).collect();
        Piece::Owned(bytemuck::cast_slice(&swapped).to_vec())
    }
}

fn swap_f32(x: f32) -> f32 {
    f32::from_bits(x.to_bits().swap_bytes())
}

fn swap_f64(x: f64) -> f64 {
    f64::from_bits(x.to_bits().swap_bytes())
}

/// Checks `args` (one per parameter) against `f` for direction `dir` and
/// encodes the values it carries, elements in `order`.
pub fn encode<'a>(
    f: &Function,
    args: &'a [Data],
    dir: Dir,
    order: Order,
) -> Result<Vec<Piece<'a>>, DataError> {
    if args.len() != f.params.len() {
        return Err(DataError::Arity {
            func: f.name.clone(),
            want: f.params.len(),
            got: args.len(),
        });
    }
    let n = counts(f, args)?;
    let mut out: Vec<Piece<'a>> = Vec::new();
    let mut head: Vec<u8> = Vec::new();
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
        let data = match a {
            Data::Str(s) => {
                head.extend_from_slice(&(s.len() as u32).to_be_bytes());
                head.extend_from_slice(s);
                continue;
            }
            Data::Char(v) => elements(v, order, |x| x),
            Data::Short(v) => elements(v, order, i16::swap_bytes),
            Data::Int(v) => elements(v, order, i32::swap_bytes),
            Data::Long(v) => elements(v, order, i64::swap_bytes),
            Data::Float(v) => elements(v, order, swap_f32),
            Data::Double(v) => elements(v, order, swap_f64),
        };
        head.extend_from_slice(&(a.len() as u64).to_be_bytes());
        // Small arrays (scalars) join the header: fewer pieces to write.
        if data.bytes().len() <= 256 {
            head.extend_from_slice(data.bytes());
        } else {
            out.push(Piece::Owned(std::mem::take(&mut head)));
            out.push(data);
        }
    }
    if !head.is_empty() {
        out.push(Piece::Owned(head));
    }
    Ok(out)
}

/// [`encode`] into one buffer.
pub fn encode_vec(
    f: &Function,
    args: &[Data],
    dir: Dir,
    order: Order,
) -> Result<Vec<u8>, DataError> {
    Ok(encode(f, args, dir, order)?
        .iter()
        .flat_map(|p| p.bytes().iter().copied())
        .collect())
}

/// Arrays this large are read into transparent huge pages.
const HUGE_ARRAY: usize = 4 << 20;

/// The rest of a frame's body, read from its stream: nothing past its end
/// is read, and nothing larger than what is left is allocated.
pub struct Body<R> {
    r: R,
    left: usize,
    what: &'static str,
}

impl<R: Read> Body<R> {
    /// `left` bytes of `what` (a call or a reply) to come from `r`.
    pub fn new(r: R, left: usize, what: &'static str) -> Body<R> {
        Body { r, left, what }
    }

    pub fn left(&self) -> usize {
        self.left
    }

    /// Fills `buf` from the body.
    pub fn fill(&mut self, buf: &mut [u8]) -> Result<(), DataError> {
        if buf.len() > self.left {
            return Err(DataError::Truncated(self.what));
        }
        self.r
            .read_exact(buf)
            .map_err(|e| DataError::Io(self.what, e.to_string()))?;
        self.left -= buf.len();
        Ok(())
    }

    pub fn take<const N: usize>(&mut self) -> Result<[u8; N], DataError> {
        let mut b = [0u8; N];
        self.fill(&mut b)?;
        Ok(b)
    }

    /// Up to `max` bytes of what is left (a message).
    pub fn rest(&mut self, max: usize) -> Result<Vec<u8>, DataError> {
        let mut b = vec![0u8; self.left.min(max)];
        self.fill(&mut b)?;
        self.skip_rest()?;
        Ok(b)
    }

    /// Reads and drops what is left, so the stream's next frame comes
    /// next.
    pub fn skip_rest(&mut self) -> Result<(), DataError> {
        let mut sink = vec![0u8; self.left.min(1 << 16)];
        while self.left > 0 {
            let n = self.left.min(sink.len());
            self.fill(&mut sink[..n])?;
        }
        Ok(())
    }

    /// Errors unless the body was read to its end.
    fn finish(&self) -> Result<(), DataError> {
        match self.left {
            0 => Ok(()),
            n => Err(DataError::Trailing(self.what, n)),
        }
    }

    /// One value of type `ty`, elements in `order`.
    /// One value of type `ty`, elements in `order`, read into `reuse` when
    /// that is an array of the same type and length (no allocation).
    fn value(&mut self, ty: Type, order: Order, reuse: Option<Data>) -> Result<Data, DataError> {
        if ty == Type::Str {
            let n = u32::from_be_bytes(self.take()?) as usize;
            if n > self.left {
                return Err(DataError::Truncated(self.what));
            }
            let mut s = vec![0u8; n];
            self.fill(&mut s)?;
            return Ok(Data::Str(s));
        }
        let n = u64::from_be_bytes(self.take()?);
        // Never allocate more than the frame holds.
        let n = usize::try_from(n)
            .ok()
            .filter(|&n| n.checked_mul(ty.size()).is_some_and(|b| b <= self.left))
            .ok_or(DataError::Truncated(self.what))?;
        let native = order == Order::native();
        macro_rules! read {
            ($t:ty, $v:ident, $swap:expr) => {{
                let mut v: Vec<$t> = match reuse {
                    Some(Data::$v(old)) if old.len() == n => old,
                    _ => {
                        // Zeroed by the allocator (fresh pages from the
                        // kernel for large ones, not written twice).
                        let mut v: Vec<$t> = vec![<$t>::default(); n];
                        if n * ty.size() >= HUGE_ARRAY {
                            // One fault per 2 MiB, not per page, while it
                            // fills.
                            roam_sys::mem::huge_pages_for_fresh(&mut v);
                        }
                        v
                    }
                };
                self.fill(bytemuck::cast_slice_mut(&mut v))?;
                if !native {
                    v.iter_mut().for_each(|x| *x = $swap(*x));
                }
                Data::$v(v)
            }};
        }
        Ok(match ty {
            Type::Char => read!(u8, Char, |x| x),
            Type::Short => read!(i16, Short, i16::swap_bytes),
            Type::Int => read!(i32, Int, i32::swap_bytes),
            Type::Long => read!(i64, Long, i64::swap_bytes),
            Type::Float => read!(f32, Float, swap_f32),
            Type::Double => read!(f64, Double, swap_f64),
            Type::Str => unreachable!("handled above"),
        })
    }
}

/// Decodes a call's values into one `Data` per parameter, OUT ones made
/// as zeros of the size the interface gives. The body must end with
/// them.
pub fn decode_call<R: Read>(
    f: &Function,
    body: &mut Body<R>,
    order: Order,
) -> Result<Vec<Data>, DataError> {
    decode_call_reusing(f, body, order, Vec::new())
}

/// [`decode_call`], reading into the arrays of `spare` (an earlier call's
/// values of the same function) where their lengths match: a worker
/// called again and again with the same sizes allocates nothing.
pub fn decode_call_reusing<R: Read>(
    f: &Function,
    body: &mut Body<R>,
    order: Order,
    spare: Vec<Data>,
) -> Result<Vec<Data>, DataError> {
    let mut spare: Vec<Option<Data>> = spare.into_iter().map(Some).collect();
    spare.resize(f.params.len(), None);
    let mut args: Vec<Option<Data>> = vec![None; f.params.len()];
    for (i, p) in f.params.iter().enumerate() {
        if p.mode.sent() {
            args[i] = Some(body.value(p.ty, order, spare[i].take())?);
        }
    }
    body.finish()?;
    let known: Vec<Data> = args
        .iter()
        .map(|a| {
            a.as_ref()
                .filter(|d| d.len() == 1)
                .cloned()
                .unwrap_or(Data::Long(Vec::new()))
        })
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
            None => match spare[i].take() {
                // OUT values arrive as zeros.
                Some(mut old) if old.ty() == p.ty && old.len() == n[i] => {
                    old.zero();
                    old
                }
                _ => Data::zeros(p.ty, n[i]),
            },
        };
        out.push(d);
    }
    Ok(out)
}

/// Decodes a reply's values; `expect` are the counts the call implied.
/// Returns one `Data` per OUT or INOUT parameter, in order. Each is read
/// into `spare`'s value of its parameter (the call's own arrays) where
/// that has the length the reply has.
pub fn decode_reply<R: Read>(
    f: &Function,
    expect: &[usize],
    body: &mut Body<R>,
    order: Order,
    spare: Vec<Data>,
) -> Result<Vec<Data>, DataError> {
    let mut spare: Vec<Option<Data>> = spare.into_iter().map(Some).collect();
    spare.resize(f.params.len(), None);
    let mut out = Vec::new();
    for (i, p) in f.params.iter().enumerate() {
        if !p.mode.returned() {
            continue;
        }
        let d = body.value(p.ty, order, spare[i].take())?;
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
    body.finish()?;
    Ok(out)
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

    fn args(n: i32, a: usize) -> Vec<Data> {
        vec![
            Data::from(n),
            Data::from((0..a).map(|i| i as f64 + 0.5).collect::<Vec<f64>>()),
            Data::Double(vec![]),
            Data::from(vec![7i64, -8]),
            Data::from("hé"),
        ]
    }

    fn call(f: &Function, bytes: &[u8], order: Order) -> Result<Vec<Data>, DataError> {
        decode_call(f, &mut Body::new(bytes, bytes.len(), "call"), order)
    }

    #[test]
    fn calls_and_replies_round_trip_in_both_orders() {
        let f = dmmul();
        // 100 elements: the array goes as a piece of its own.
        let args = args(10, 100);
        for order in [Order::Big, Order::Little] {
            let b = encode_vec(&f, &args, Dir::Call, order).unwrap();
            // n = 10: a big-endian count of 1, then the element in `order`.
            assert_eq!(&b[..8], &1u64.to_be_bytes());
            let ten = match order {
                Order::Big => 10i32.to_be_bytes(),
                Order::Little => 10i32.to_le_bytes(),
            };
            assert_eq!(&b[8..12], &ten);
            let got = call(&f, &b, order).unwrap();
            assert_eq!(got[0], args[0]);
            assert_eq!(got[1], args[1]);
            assert_eq!(got[2], Data::Double(vec![0.0; 100]));
            assert_eq!(got[3], args[3]);
            assert_eq!(got[4], args[4]);
            let mut reply = got.clone();
            reply[2] = Data::from(vec![9.25; 100]);
            let rb = encode_vec(&f, &reply, Dir::Reply, order).unwrap();
            let n = counts(&f, &args).unwrap();
            let outs = decode_reply(
                &f,
                &n,
                &mut Body::new(&rb[..], rb.len(), "reply"),
                order,
                Vec::new(),
            )
            .unwrap();
            assert_eq!(outs, vec![reply[2].clone(), reply[3].clone()]);
        }
        // The native order borrows the array; the other converts it.
        let native = encode(&f, &args, Dir::Call, Order::native()).unwrap();
        assert!(native
            .iter()
            .any(|p| matches!(p, Piece::Borrowed(b) if b.len() == 800)));
        let other = if Order::native() == Order::Big {
            Order::Little
        } else {
            Order::Big
        };
        let swapped = encode(&f, &args, Dir::Call, other).unwrap();
        assert!(swapped.iter().all(|p| matches!(p, Piece::Owned(_))));
        assert_eq!(Order::agree(Order::Little, Order::Little), Order::Little);
        assert_eq!(Order::agree(Order::Little, Order::Big), Order::Big);
    }

    #[test]
    fn a_call_reuses_an_earlier_calls_arrays_of_the_same_size() {
        let f = dmmul();
        let o = Order::native();
        let b = encode_vec(&f, &args(10, 100), Dir::Call, o).unwrap();
        let mut first = call(&f, &b, o).unwrap();
        first[2] = Data::from(vec![7.0; 100]);
        let at = match &first[1] {
            Data::Double(v) => v.as_ptr(),
            _ => unreachable!(),
        };
        let again =
            decode_call_reusing(&f, &mut Body::new(&b[..], b.len(), "call"), o, first).unwrap();
        // The same memory, the values of the new call, OUT zeroed again.
        assert!(matches!(&again[1], Data::Double(v) if v.as_ptr() == at));
        assert_eq!(again, call(&f, &b, o).unwrap());
        // Other sizes get new arrays.
        let b2 = encode_vec(&f, &args(3, 9), Dir::Call, o).unwrap();
        let third =
            decode_call_reusing(&f, &mut Body::new(&b2[..], b2.len(), "call"), o, again).unwrap();
        assert_eq!(third, call(&f, &b2, o).unwrap());
    }

    #[test]
    fn a_reply_lands_in_the_calls_own_arrays() {
        let f = dmmul();
        let o = Order::native();
        let mut vals = args(10, 100);
        vals[2] = Data::from(vec![3.0; 100]);
        let reply = encode_vec(&f, &vals, Dir::Reply, o).unwrap();
        let n = counts(&f, &vals).unwrap();
        let spare = vec![
            Data::Char(vec![]),
            Data::Char(vec![]),
            Data::from(vec![0.0f64; 100]),
            Data::from(vec![0i64; 2]),
            Data::Char(vec![]),
        ];
        let at = match &spare[2] {
            Data::Double(v) => v.as_ptr(),
            _ => unreachable!(),
        };
        let body = &mut Body::new(&reply[..], reply.len(), "reply");
        let got = decode_reply(&f, &n, body, o, spare).unwrap();
        assert!(matches!(&got[0], Data::Double(v) if v.as_ptr() == at));
        assert_eq!(got, vec![vals[2].clone(), vals[3].clone()]);
        // Spare arrays of another length or type are not used.
        let odd = vec![
            Data::Char(vec![]),
            Data::Char(vec![]),
            Data::from(vec![1.0f32; 100]),
        ];
        let body = &mut Body::new(&reply[..], reply.len(), "reply");
        let got = decode_reply(&f, &n, body, o, odd).unwrap();
        assert_eq!(got, vec![vals[2].clone(), vals[3].clone()]);
    }

    #[test]
    fn mismatched_arguments_are_refused() {
        let f = dmmul();
        let o = Order::Big;
        let short = vec![Data::from(2)];
        assert!(matches!(
            encode(&f, &short, Dir::Call, o),
            Err(DataError::Arity {
                want: 5,
                got: 1,
                ..
            })
        ));
        let mut wrong_type = args(2, 4);
        wrong_type[1] = Data::from(vec![1.0f32; 4]);
        assert!(matches!(
            encode(&f, &wrong_type, Dir::Call, o),
            Err(DataError::Type { .. })
        ));
        let wrong_count = args(3, 4);
        assert!(matches!(
            encode(&f, &wrong_count, Dir::Call, o),
            Err(DataError::Count {
                want: 9,
                got: 4,
                ..
            })
        ));
        let negative = args(-3, 4);
        assert!(matches!(
            encode(&f, &negative, Dir::Call, o),
            Err(DataError::Dim(..))
        ));
    }

    #[test]
    fn corrupt_and_truncated_messages_are_refused_without_allocating() {
        let f = dmmul();
        let o = Order::Big;
        let b = encode_vec(&f, &args(2, 4), Dir::Call, o).unwrap();
        for cut in 0..b.len() {
            assert!(call(&f, &b[..cut], o).is_err(), "cut at {cut}");
        }
        // A body longer than its values, and a stream shorter than its body.
        let e = decode_call(&f, &mut Body::new(&b[..], b.len() + 5, "call"), o).unwrap_err();
        assert!(matches!(e, DataError::Trailing("call", 5)), "{e}");
        let e = decode_call(&f, &mut Body::new(&b[..20], b.len(), "call"), o).unwrap_err();
        assert!(matches!(e, DataError::Io("call", _)), "{e}");
        let mut extra = b.clone();
        extra.push(0);
        assert!(matches!(
            call(&f, &extra, o),
            Err(DataError::Trailing("call", 1))
        ));
        // A huge count in the array's header.
        let mut huge = b.clone();
        huge[12..20].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(matches!(call(&f, &huge, o), Err(DataError::Truncated(_))));
        let mut huge_str = b.clone();
        let at = huge_str.len() - 7;
        huge_str[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            call(&f, &huge_str, o),
            Err(DataError::Truncated(_))
        ));
        // A count that disagrees with n.
        let mut lie = b.clone();
        lie[8..12].copy_from_slice(&3i32.to_be_bytes());
        assert!(matches!(
            call(&f, &lie, o),
            Err(DataError::Count {
                want: 9,
                got: 4,
                ..
            })
        ));
        // A reply with the wrong count.
        let mut reply = call(&f, &b, o).unwrap();
        reply[2] = Data::Double(vec![1.0; 4]);
        let rb = encode_vec(&f, &reply, Dir::Reply, o).unwrap();
        let mut body = Body::new(&rb[..], rb.len(), "reply");
        assert!(decode_reply(&f, &[1, 9, 9, 2, 1], &mut body, o, Vec::new()).is_err());
        // What is left of a body can be skipped, to stay in step.
        let two: Vec<u8> = [&b[..], &b[..]].concat();
        let mut r = &two[..];
        let mut first = Body::new(&mut r, b.len(), "call");
        first.take::<4>().unwrap();
        first.skip_rest().unwrap();
        assert_eq!(call(&f, r, o).unwrap()[0], Data::from(2));
    }
}

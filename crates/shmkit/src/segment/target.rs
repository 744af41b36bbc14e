//! Names of segments: [`Target`], [`SysvKey`] and [`PosixName`], with the
//! `kind:value` text form the command line uses.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Op, Result};
use crate::sys;

/// A System V IPC key, as `shmget(2)` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SysvKey(i32);

impl SysvKey {
    /// `IPC_PRIVATE`: every creation makes a new segment that no key finds;
    /// share it by its shmid or across `fork`.
    pub const PRIVATE: SysvKey = SysvKey(libc::IPC_PRIVATE);

    /// A key from its raw value.
    pub const fn new(key: i32) -> SysvKey {
        SysvKey(key)
    }

    /// The key `ftok(3)` derives from an existing file and a project id, the
    /// same that a C program calling `ftok(path, proj_id)` gets.
    ///
    /// # Errors
    ///
    /// The file does not exist or cannot be stat'ed.
    ///
    /// # Examples
    ///
    /// ```
    /// let key = shmkit::segment::SysvKey::ftok("/", 65)?;
    /// assert_ne!(key, shmkit::segment::SysvKey::PRIVATE);
    /// # Ok::<(), shmkit::Error>(())
    /// ```
    pub fn ftok(path: impl AsRef<Path>, proj_id: u8) -> Result<SysvKey> {
        let path = path.as_ref();
        sys::sysv::ftok(path, proj_id)
            .map(SysvKey)
            .map_err(|e| Error::os(Op::Open, format!("ftok({}, {proj_id})", path.display()), e))
    }

    /// The raw key.
    pub const fn raw(self) -> i32 {
        self.0
    }
}

impl fmt::Display for SysvKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The same form `ipcs` prints: 0x and eight hex digits.
        write!(f, "{:#010x}", self.0 as u32)
    }
}

/// A validated POSIX shared-memory name, kept with its leading slash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PosixName(String);

impl PosixName {
    /// Validates a name: an optional leading `/`, then 1 to 255 bytes with no
    /// `/` and no NUL, and not `.` or `..`.
    ///
    /// # Errors
    ///
    /// The name breaks one of those rules.
    pub fn new(name: &str) -> Result<PosixName> {
        let bare = name.strip_prefix('/').unwrap_or(name);
        let why = if bare.is_empty() {
            Some("a POSIX name needs at least one character after the slash")
        } else if bare.len() > 255 {
            Some("a POSIX name has at most 255 bytes")
        } else if bare.contains('/') {
            Some("a POSIX name has no '/' after the leading one")
        } else if bare.contains('\0') {
            Some("a POSIX name has no NUL byte")
        } else if bare == "." || bare == ".." {
            Some("'.' and '..' are not POSIX names")
        } else {
            None
        };
        match why {
            Some(why) => Err(Error::invalid(Op::Open, format!("posix:{name}"), why)),
            None => Ok(PosixName(format!("/{bare}"))),
        }
    }

    /// The name with its leading slash, as `shm_open(3)` takes it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Where Linux keeps the object: `/dev/shm/NAME`.
    pub fn path(&self) -> PathBuf {
        Path::new(sys::fs::SHM_DIR).join(&self.0[1..])
    }
}

impl fmt::Display for PosixName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of a segment that exists outside this process.
///
/// Its text form is what the command line takes:
///
/// | text | meaning |
/// |---|---|
/// | `sysv:KEY` | System V segment by key, decimal or `0x` hex |
/// | `sysv-id:ID` | System V segment by shmid |
/// | `posix:NAME` | POSIX object (`/NAME`, the leading slash optional) |
/// | `file:PATH` | a file mapped shared |
///
/// # Examples
///
/// ```
/// use shmkit::segment::Target;
/// let t: Target = "sysv:0x41".parse()?;
/// assert_eq!(t.to_string(), "sysv:0x00000041");
/// let t: Target = "posix:frames".parse()?;
/// assert_eq!(t.to_string(), "posix:/frames");
/// # Ok::<(), shmkit::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A System V segment found by its key.
    Sysv(SysvKey),
    /// A System V segment found by its shmid.
    SysvId(i32),
    /// A POSIX shared-memory object.
    Posix(PosixName),
    /// An ordinary file.
    File(PathBuf),
}

impl Target {
    /// A POSIX target; see [`PosixName::new`] for the rules.
    ///
    /// # Errors
    ///
    /// The name is not valid.
    pub fn posix(name: &str) -> Result<Target> {
        PosixName::new(name).map(Target::Posix)
    }

    /// A System V target by key.
    pub fn sysv(key: i32) -> Target {
        Target::Sysv(SysvKey::new(key))
    }

    /// A file target.
    pub fn file(path: impl Into<PathBuf>) -> Target {
        Target::File(path.into())
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Sysv(key) if *key == SysvKey::PRIVATE => write!(f, "sysv:IPC_PRIVATE"),
            Target::Sysv(key) => write!(f, "sysv:{key}"),
            Target::SysvId(id) => write!(f, "sysv-id:{id}"),
            Target::Posix(name) => write!(f, "posix:{name}"),
            Target::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

/// Parses a decimal or `0x`-hexadecimal integer; keys may be written as the
/// unsigned 32-bit value `ipcs` prints.
fn parse_int(text: &str) -> Option<i64> {
    let (neg, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let value = match digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        Some(hex) => i64::from_str_radix(hex, 16).ok()?,
        None => digits.parse::<i64>().ok()?,
    };
    Some(if neg { -value } else { value })
}

impl FromStr for SysvKey {
    type Err = Error;

    /// Parses a key as `sysv:KEY` does: decimal, `0x` hex (up to
    /// `0xffffffff`), or `IPC_PRIVATE`.
    fn from_str(text: &str) -> Result<SysvKey> {
        match format!("sysv:{text}").parse::<Target>()? {
            Target::Sysv(key) => Ok(key),
            _ => unreachable!("a sysv: target parses to Target::Sysv"),
        }
    }
}

impl FromStr for Target {
    type Err = Error;

    fn from_str(text: &str) -> Result<Target> {
        let bad = |why: &str| Error::invalid(Op::Open, text, why.to_string());
        let Some((kind, value)) = text.split_once(':') else {
            return Err(bad("a target looks like sysv:KEY, sysv-id:ID, posix:NAME or file:PATH"));
        };
        match kind {
            "sysv" => {
                if value.eq_ignore_ascii_case("IPC_PRIVATE") || value.eq_ignore_ascii_case("private") {
                    return Ok(Target::Sysv(SysvKey::PRIVATE));
                }
                let key = parse_int(value)
                    .filter(|k| (i64::from(i32::MIN)..=i64::from(u32::MAX)).contains(k))
                    .ok_or_else(|| bad("a System V key is a 32-bit integer, decimal or 0x hex"))?;
                // Keys above i32::MAX are the unsigned form of negative keys.
                Ok(Target::Sysv(SysvKey::new(key as u32 as i32)))
            }
            "sysv-id" => {
                let id = parse_int(value)
                    .filter(|id| (0..=i64::from(i32::MAX)).contains(id))
                    .ok_or_else(|| bad("a shmid is a non-negative 32-bit integer"))?;
                Ok(Target::SysvId(id as i32))
            }
            "posix" => PosixName::new(value).map(Target::Posix),
            "file" if value.is_empty() => Err(bad("file: needs a path")),
            "file" => Ok(Target::File(PathBuf::from(value))),
            _ => Err(bad("unknown kind; use sysv:KEY, sysv-id:ID, posix:NAME or file:PATH")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        assert_eq!("sysv:0x10".parse::<Target>().unwrap(), Target::sysv(16));
        assert_eq!("sysv:16".parse::<Target>().unwrap(), Target::sysv(16));
        assert_eq!("sysv:0xffffffff".parse::<Target>().unwrap(), Target::sysv(-1));
        assert_eq!("sysv:private".parse::<Target>().unwrap(), Target::Sysv(SysvKey::PRIVATE));
        assert_eq!("sysv-id:7".parse::<Target>().unwrap(), Target::SysvId(7));
        assert_eq!("posix:/a".parse::<Target>().unwrap(), "posix:a".parse::<Target>().unwrap());
        assert_eq!("file:/tmp/x".parse::<Target>().unwrap(), Target::file("/tmp/x"));
    }

    #[test]
    fn rejects_bad_targets() {
        for bad in [
            "",
            "sysv",
            "sysv:",
            "sysv:zz",
            "sysv:0x1ffffffff",
            "sysv-id:-1",
            "posix:",
            "posix:/",
            "posix:a/b",
            "posix:..",
            "file:",
            "tcp:1",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad:?} parsed");
        }
        let long = format!("posix:{}", "x".repeat(256));
        assert!(long.parse::<Target>().is_err());
    }

    #[test]
    fn display_round_trips() {
        for text in ["sysv:0x00000041", "sysv-id:3", "posix:/name", "file:/tmp/f", "sysv:IPC_PRIVATE"] {
            assert_eq!(text.parse::<Target>().unwrap().to_string(), text);
        }
    }
}

//! Finding and reading a program before it is placed: where the shell would
//! find it, which architecture it needs, and for a `#!` script what the
//! kernel would run in its place.
//!
//! The proxy does this, as the user, in the home node's file tree (the tree
//! remote processes see). A program it cannot find or read is left to the
//! node (`arch` unknown): the node then says if it is missing.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use roam_elf::{Arch, InspectError, Program};

/// What the home learnt of a program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The file, as found (relative paths stay relative to the working
    /// directory, which the process keeps).
    pub path: PathBuf,
    pub arch: Arch,
    /// The kernel's expansion of a `#!` script in place of argv[0]
    /// (`SpawnSpec::script`); empty for an ELF file.
    pub script: Vec<Vec<u8>>,
}

/// The PATH search of `execvp`: `name` itself if it has a slash, else the
/// first executable regular file in `path_var`'s directories (an empty
/// entry is the current directory).
pub fn find(name: &OsStr, path_var: Option<&OsStr>) -> Option<PathBuf> {
    if name.is_empty() {
        return None;
    }
    if name.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(name));
    }
    let path_var = path_var.unwrap_or(OsStr::new("/usr/local/bin:/usr/bin:/bin"));
    path_var
        .as_bytes()
        .split(|&b| b == b':')
        .map(|dir| {
            if dir.is_empty() {
                PathBuf::from(".").join(name)
            } else {
                Path::new(OsStr::from_bytes(dir)).join(name)
            }
        })
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Finds and reads `name` (argv[0] or the program to run). `Ok(None)` when
/// it is not found or cannot be read here, or is neither ELF nor `#!` (the
/// node then runs it as it is, and says if it fails); an error when it is
/// a broken ELF file, or a script whose interpreter is missing or nests too
/// deep, as the kernel would refuse it.
pub fn locate(name: &OsStr, path_var: Option<&OsStr>) -> Result<Option<Located>, InspectError> {
    let Some(path) = find(name, path_var) else {
        return Ok(None);
    };
    let program = match roam_elf::inspect_file(&path) {
        Ok(p) => p,
        Err(InspectError::Io { .. })
        | Err(InspectError::NotRegularFile { .. })
        | Err(InspectError::NotExecutableFormat { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(Some(Located {
        arch: program.arch(),
        script: expansion(&path, &program),
        path,
    }))
}

/// `[/i2, /i1, arg, script]` for script → `#!/i1 arg` → `#!/i2`: argv as
/// the kernel rebuilds it, up to the original argv[1].
fn expansion(path: &Path, program: &Program) -> Vec<Vec<u8>> {
    let mut head: Vec<Vec<u8>> = vec![path.as_os_str().as_bytes().to_vec()];
    let mut p = program;
    while let Program::Script {
        interpreter,
        arg,
        resolved,
    } = p
    {
        if let Some(a) = arg {
            head.insert(0, a.as_bytes().to_vec());
        }
        head.insert(0, OsString::from(interpreter.as_os_str()).into_vec());
        p = resolved;
    }
    if head.len() == 1 {
        head.clear();
    }
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("roam-locate-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn script(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn finds_like_execvp() {
        let d = dir("find");
        script(&d.0.join("tool"), "#!/bin/sh\n");
        std::fs::write(d.0.join("data"), "x").unwrap();
        let pv = format!("/nonexistent:{}", d.0.display());
        assert_eq!(
            find(OsStr::new("tool"), Some(OsStr::new(&pv))),
            Some(d.0.join("tool"))
        );
        assert_eq!(find(OsStr::new("data"), Some(OsStr::new(&pv))), None);
        assert_eq!(
            find(OsStr::new("./x/y"), None),
            Some(PathBuf::from("./x/y"))
        );
        assert_eq!(find(OsStr::new(""), None), None);
        assert!(find(OsStr::new("true"), None).is_some());
    }

    #[test]
    fn reads_elf_files_and_scripts() {
        let t = locate(OsStr::new("/bin/true"), None).unwrap().unwrap();
        assert_eq!(t.arch, Arch::native());
        assert!(t.script.is_empty());

        let d = dir("scripts");
        let inner = d.0.join("inner");
        script(&inner, "#!/bin/sh -e\necho hi\n");
        let outer = d.0.join("outer");
        script(&outer, &format!("#!{} -x\n", inner.display()));
        let l = locate(outer.as_os_str(), None).unwrap().unwrap();
        assert_eq!(l.arch, Arch::native());
        let s = |p: &Path| p.as_os_str().as_bytes().to_vec();
        assert_eq!(
            l.script,
            vec![
                b"/bin/sh".to_vec(),
                b"-e".to_vec(),
                s(&inner),
                b"-x".to_vec(),
                s(&outer)
            ]
        );

        let broken = d.0.join("broken");
        script(&broken, "#!/nonexistent/interp\n");
        let e = locate(broken.as_os_str(), None).unwrap_err();
        assert!(matches!(e, InspectError::InterpreterMissing { .. }), "{e}");

        // Not ELF, no #!: the node decides (a shell would run it with sh).
        let plain = d.0.join("plain");
        script(&plain, "echo hi\n");
        assert_eq!(locate(plain.as_os_str(), None).unwrap(), None);
        assert_eq!(locate(OsStr::new("/nonexistent/prog"), None).unwrap(), None);

        let bad = d.0.join("bad-elf");
        let mut bytes = std::fs::read("/bin/true").unwrap();
        bytes.truncate(80);
        std::fs::write(&bad, &bytes).unwrap();
        assert!(locate(bad.as_os_str(), None).is_err());
    }
}

//! Throw-away TLS certificates for tests (made with `openssl`).

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::sys;

/// Makes a throw-away certificate authority in `dir`: `ca.key` and a self-signed `ca.crt` with
/// common name `cn`, valid for two days. Returns the certificate's path (for
/// `sslrootcert=...`). Needs `openssl` on the `PATH`.
pub fn make_ca(dir: &Path, cn: &str) -> Result<PathBuf, Error> {
    let subject = format!("/CN={cn}");
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", &subject,
            "-keyout", "ca.key", "-out", "ca.crt",
        ],
    )?;
    Ok(dir.join("ca.crt"))
}

/// Run `openssl args` in `dir`.
pub(crate) fn openssl(dir: &Path, args: &[&str]) -> Result<(), Error> {
    let mut cmd = std::process::Command::new("openssl");
    cmd.current_dir(dir).args(args);
    sys::run(cmd).map(|_| ())
}

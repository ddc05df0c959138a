//! The agent's environment: inherited minus `PADDOCK_*`, plus the attempt ids.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;

/// The only `PADDOCK_` variables an agent ever sees (from [`super::Spec::env`]).
pub const ALLOWED_PADDOCK_VARS: [&str; 3] =
    ["PADDOCK_TASK_ID", "PADDOCK_ATTEMPT_ID", "PADDOCK_AGENT_ID"];

const PREFIX: &[u8] = b"PADDOCK_";

/// The complete environment for the child, given the daemon's own.
pub(super) fn child_env(
    inherited: impl IntoIterator<Item = (OsString, OsString)>,
    extra: &[(String, String)],
) -> io::Result<Vec<(OsString, OsString)>> {
    for (name, value) in extra {
        if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid environment variable {name:?} for an agent"),
            ));
        }
        if name.as_bytes().starts_with(PREFIX) && !ALLOWED_PADDOCK_VARS.contains(&name.as_str()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "refusing to pass {name} to an agent: only {ALLOWED_PADDOCK_VARS:?} are allowed"
                ),
            ));
        }
    }
    let mut env: Vec<(OsString, OsString)> = inherited
        .into_iter()
        .filter(|(name, _)| {
            let name = name.as_bytes();
            !name.starts_with(PREFIX) && !extra.iter().any(|(n, _)| n.as_bytes() == name)
        })
        .collect();
    env.extend(
        extra
            .iter()
            .map(|(n, v)| (OsString::from(n), OsString::from(v))),
    );
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).into(), (*b).into()))
            .collect()
    }

    fn ids() -> Vec<(String, String)> {
        vec![
            ("PADDOCK_TASK_ID".into(), "t1".into()),
            ("PADDOCK_ATTEMPT_ID".into(), "a1".into()),
            ("PADDOCK_AGENT_ID".into(), "g1".into()),
        ]
    }

    #[test]
    fn strips_every_inherited_paddock_var_and_adds_the_ids() {
        let parent = os(&[
            ("PATH", "/bin"),
            ("PADDOCK_DAEMON_TOKEN", "secret"),
            ("PADDOCK_SERVER_URL", "https://x"),
            ("PADDOCK_TASK_ID", "the-daemons-own"),
            ("HOME", "/home/u"),
        ]);
        let env = child_env(parent, &ids()).unwrap();
        let mut got: Vec<(String, String)> = env
            .into_iter()
            .map(|(a, b)| (a.into_string().unwrap(), b.into_string().unwrap()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("HOME".into(), "/home/u".into()),
                ("PADDOCK_AGENT_ID".into(), "g1".into()),
                ("PADDOCK_ATTEMPT_ID".into(), "a1".into()),
                ("PADDOCK_TASK_ID".into(), "t1".into()),
                ("PATH".into(), "/bin".into()),
            ]
        );
    }

    #[test]
    fn refuses_other_paddock_vars_and_malformed_names() {
        for bad in ["PADDOCK_DAEMON_TOKEN", "PADDOCK_", "A=B", ""] {
            let extra = vec![(bad.to_string(), "x".to_string())];
            let err = child_env(os(&[]), &extra).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad}");
        }
        // The spec may override ordinary inherited variables.
        let env = child_env(os(&[("LANG", "C")]), &[("LANG".into(), "en".into())]).unwrap();
        assert_eq!(env, os(&[("LANG", "en")]));
    }
}

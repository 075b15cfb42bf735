//! USER resolution through the image's own `/etc/passwd` and `/etc/group`,
//! as docker does: `name`, `uid`, `name:group`, `uid:gid`; a numeric id that
//! the files do not know is used as is, a name they do not know is an error.

/// Who a command runs as.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (from `/etc/group` membership).
    pub groups: Vec<u32>,
    /// Home directory (for `HOME` when the environment has none).
    pub home: String,
}

/// A USER that cannot be resolved.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    /// A user name the image's `/etc/passwd` does not list.
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoUser(String),
    /// A group name the image's `/etc/group` does not list.
    #[error("unable to find group {0}: no matching entries in group file")]
    NoGroup(String),
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 7 || l.starts_with('#') {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
        })
    })
}

/// The primary group of the user `name` in a passwd file's text.
pub fn primary_gid(passwd: &str, name: &str) -> Option<u32> {
    passwd_entries(passwd)
        .find(|e| e.name == name)
        .map(|e| e.gid)
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 || l.starts_with('#') {
            return None;
        }
        Some(GroupEntry {
            name: f[0],
            gid: f[2].parse().ok()?,
            members: f[3].split(',').filter(|m| !m.is_empty()).collect(),
        })
    })
}

/// Resolves `spec` (empty means root) against the image's passwd and group
/// files (absent files count as empty).
///
/// # Errors
/// A user or group given by name that the files do not list.
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<Identity, UserError> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let entry = passwd_entries(passwd).find(|e| e.name == user || e.uid.to_string() == user);
    let (uid, mut gid, home, name) = match (entry, user.parse::<u32>()) {
        (Some(e), _) => (e.uid, e.gid, e.home.to_string(), Some(e.name.to_string())),
        (None, Ok(uid)) => (uid, 0, "/".to_string(), None),
        (None, Err(_)) => return Err(UserError::NoUser(user.to_string())),
    };
    let mut groups = Vec::new();
    if let Some(g) = grp {
        gid = match group_entries(group).find(|e| e.name == g || e.gid.to_string() == g) {
            Some(e) => e.gid,
            None => g.parse().map_err(|_| UserError::NoGroup(g.to_string()))?,
        };
    } else if let Some(name) = &name {
        // Supplementary groups only when the group was not given (docker).
        groups = group_entries(group)
            .filter(|e| e.members.contains(&name.as_str()))
            .map(|e| e.gid)
            .collect();
    }
    if !groups.contains(&gid) {
        groups.insert(0, gid);
    }
    Ok(Identity {
        uid,
        gid,
        groups,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                          # comment\n\
                          app:x:1000:1000:App:/home/app:/bin/sh\n\
                          nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:app,other\napp:x:1000:\nstaff:x:50:app\n";

    #[test]
    fn names_and_numbers() {
        let root = resolve("", PASSWD, GROUP).unwrap();
        assert_eq!((root.uid, root.gid, root.home.as_str()), (0, 0, "/root"));
        let app = resolve("app", PASSWD, GROUP).unwrap();
        assert_eq!((app.uid, app.gid), (1000, 1000));
        assert_eq!(app.groups, [1000, 10, 50]);
        assert_eq!(resolve("1000", PASSWD, GROUP).unwrap().home, "/home/app");
        let x = resolve("4242:77", PASSWD, GROUP).unwrap();
        assert_eq!((x.uid, x.gid, x.groups.as_slice()), (4242, 77, &[77][..]));
        let y = resolve("app:wheel", PASSWD, GROUP).unwrap();
        assert_eq!((y.gid, y.groups.as_slice()), (10, &[10][..]));
    }

    #[test]
    fn unknown_names_are_errors() {
        assert_eq!(
            resolve("ghost", PASSWD, GROUP),
            Err(UserError::NoUser("ghost".into()))
        );
        assert_eq!(
            resolve("app:ghosts", PASSWD, GROUP),
            Err(UserError::NoGroup("ghosts".into()))
        );
        assert_eq!(resolve("7", "", "").unwrap().gid, 0);
    }
}

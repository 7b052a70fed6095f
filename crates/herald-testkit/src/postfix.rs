//! A private Postfix instance, as the Postfix tests and the benchmark's
//! Postfix phase set one up: its own main.cf and master.cf in a directory of
//! its own (no chroot), with its own queue, data directory and log, so the
//! system's Postfix, its /etc/postfix and its queue are never touched.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// Postfix's command, which starts and stops an instance's master.
pub const POSTFIX: &str = "/usr/sbin/postfix";

/// The numeric user and group ids of a system user, from `/etc/passwd`.
pub fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&name) && fields.len() > 3)
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
            .flatten()
    })
}

/// The main.cf lines every instance in `dir` needs: its own queue, data
/// directory and log, `hostname` for every name it gives itself, loopback
/// only, no local delivery, and `banner` in its greeting (to tell it from
/// anyone else's server on the port). The caller adds who may relay and where to.
pub fn main_cf(dir: &Path, hostname: &str, banner: &str) -> String {
    let d = dir.display();
    format!(
        "\
compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = {hostname}
mydomain = {hostname}
myorigin = {hostname}
mydestination =
alias_maps =
alias_database =
biff = no
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
smtpd_banner = $myhostname ESMTP {banner}
"
    )
}

/// Debian's master.cf without chroot, with smtpd on `port` of 127.0.0.1 and
/// `postlogd` for `maillog_file`.
pub fn master_cf(port: u16) -> String {
    format!(
        "\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60    1 pickup
cleanup   unix  n - n -     0 cleanup
qmgr      unix  n - n 300   1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n -     - trivial-rewrite
bounce    unix  - - n -     0 bounce
defer     unix  - - n -     0 bounce
trace     unix  - - n -     0 bounce
verify    unix  - - n -     1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -     - proxymap
smtp      unix  - - n -     - smtp
relay     unix  - - n -     - smtp
showq     unix  n - n -     - showq
error     unix  - - n -     - error
retry     unix  - - n -     - error
discard   unix  - - n -     - discard
anvil     unix  - - n -     1 anvil
scache    unix  - - n -     1 scache
postlog   unix-dgram n - n - 1 postlogd
"
    )
}

/// Waits for a child told to stop to exit, killing it when it has not after 10 s.
pub fn reap(mut child: Child) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

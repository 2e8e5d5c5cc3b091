//! Free host ports for stacks' host-mode published ports.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

/// A free TCP port on the loopback interface that this process has not handed out before.
///
/// The kernel picks a free ephemeral port; remembering what we handed out keeps two tests of
/// one run from getting the same port in the window between this call and their deploy (the
/// kernel may offer a just-released port again).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("no free port on 127.0.0.1: {e}"));
        if given.insert(port) {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 that was not handed out already");
}

#[cfg(test)]
mod tests {
    #[test]
    fn ports_are_not_handed_out_twice() {
        let ports: Vec<u16> = (0..50).map(|_| super::free_port()).collect();
        let unique: std::collections::HashSet<_> = ports.iter().collect();
        assert_eq!(unique.len(), ports.len());
        assert!(ports.iter().all(|p| *p > 0));
    }
}

//! The two deployers a swarm scenario runs under: `stack` (docker stack deploy) and `abra`
//! (ci-warm driving the abra simulator, `abra-sim`, as it drives abra in production).
//!
//! A scenario takes a [`Kind`] and gets from it the config's `deployer` section and each app's
//! deployer keys; [`both_deployers!`] turns one scenario function into two `#[tokio::test]`s.

use serde_json::{Map, Value, json};

use crate::stack::TestStack;

/// The abra server of the tests' `ABRA_DIR` (abra's `server add --local` name).
pub const SERVER: &str = "default";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Stack,
    Abra,
}

impl Kind {
    /// The config's `deployer` section. For abra it prepares `<test dir>/abra` (abra's real
    /// directory, with `servers/default/`) and points at the simulator.
    pub fn deployer(self, st: &TestStack) -> Value {
        match self {
            Kind::Stack => json!({"kind": "stack"}),
            Kind::Abra => {
                let dir = abra_dir(st);
                std::fs::create_dir_all(dir.join("servers").join(SERVER))
                    .unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
                let sim = crate::abra_sim_bin().unwrap_or_else(|e| panic!("abra-sim: {e:#}"));
                json!({
                    "kind": "abra",
                    "abra": sim,
                    "server": SERVER,
                    "abra_dir": dir,
                    "timeout_secs": 300,
                })
            }
        }
    }

    /// The domain of the app deployed as `st` ([`Kind::app_keys`]' `domain`): for the stack
    /// deployer the one its env file names, for abra the stack name with dots.
    pub fn domain(self, st: &TestStack) -> String {
        match self {
            Kind::Stack => st.domain(),
            Kind::Abra => abra_domain(st),
        }
    }

    /// The config of the demo app deployed as `st` from `repo`: recipe, version, probes, and
    /// this deployer's keys with `env` in its env file ([`Kind::app_keys_with_env`]).
    pub fn demo_app(
        self,
        st: &TestStack,
        repo: &str,
        stateful: bool,
        initial: &str,
        probes: Value,
        env: &[(&str, &str)],
    ) -> Value {
        let mut app = json!({
            "recipe": "demo",
            "repo": repo,
            "stateful": stateful,
            "initial_version": initial,
            "probes": probes,
        });
        if let Some(m) = app.as_object_mut() {
            m.extend(self.app_keys_with_env(st, env));
        }
        app
    }

    /// The deployer-dependent keys of the app deployed as `st`: its domain, stack and env (the
    /// stack deployer's env file; for abra the keys its bootstrap writes into the env file abra
    /// creates). abra derives the stack from the domain (dots become underscores), so the
    /// domain is the stack name with dots.
    pub fn app_keys(self, st: &TestStack) -> Map<String, Value> {
        self.app_keys_with_env(st, &[])
    }

    /// [`Kind::app_keys`] with more keys in the app's env file (`KEY=value`, replacing the
    /// line of a key that is already there): written into the stack deployer's env file, and
    /// for abra configured as the app's `env`, which ci-warm's bootstrap writes into the env
    /// file abra creates.
    pub fn app_keys_with_env(self, st: &TestStack, env: &[(&str, &str)]) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("stack".into(), json!(st.name));
        m.insert("domain".into(), json!(self.domain(st)));
        match self {
            Kind::Stack => {
                let path = st.env_file();
                let mut text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
                for (key, value) in env {
                    let prefix = format!("{key}=");
                    let mut lines: Vec<String> = text
                        .lines()
                        .filter(|l| !l.starts_with(&prefix))
                        .map(str::to_owned)
                        .collect();
                    lines.push(format!("{key}={value}"));
                    text = lines.join("\n") + "\n";
                }
                std::fs::write(&path, text)
                    .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
                m.insert("env_file".into(), json!(path));
            }
            Kind::Abra => {
                let mut keys = Map::new();
                keys.insert("PORT".into(), json!(st.port.to_string()));
                for (key, value) in env {
                    keys.insert((*key).into(), json!(value));
                }
                m.insert("env".into(), Value::Object(keys));
            }
        }
        m
    }
}

/// abra's real directory of a test (`servers/`, the app env files).
pub fn abra_dir(st: &TestStack) -> std::path::PathBuf {
    st.path().join("abra")
}

/// The domain abra turns into the stack name `st.name`.
pub fn abra_domain(st: &TestStack) -> String {
    st.name.replace('_', ".")
}

/// The env file abra keeps for the app of `st`.
pub fn abra_env_file(st: &TestStack) -> std::path::PathBuf {
    abra_dir(st)
        .join("servers")
        .join(SERVER)
        .join(format!("{}.env", abra_domain(st)))
}

/// `both_deployers!(scenario_fn => stack_test_name, abra_test_name);` defines two multi-thread
/// tokio tests running `scenario_fn(Kind::Stack)` and `scenario_fn(Kind::Abra)`.
#[macro_export]
macro_rules! both_deployers {
    ($scenario:ident => $stack:ident, $abra:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $stack() {
            $scenario($crate::deployers::Kind::Stack).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $abra() {
            $scenario($crate::deployers::Kind::Abra).await
        }
    };
}

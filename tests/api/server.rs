//! `start_api()`: the API of a master on a fresh SQLite store, on port 0,
//! with an admin key and helpers to call it.

use std::net::SocketAddr;

use outpost::api::{ApiState, bootstrap_admin};
use outpost::config::Role;

use crate::http::{Reply, request};
use crate::support::{TestStore, example_drivers};

pub struct TestApi {
    pub addr: SocketAddr,
    pub admin: String,
    pub store: TestStore,
    _stop: tokio::sync::oneshot::Sender<()>,
    _data: tempfile::TempDir,
}

pub async fn start_api() -> TestApi {
    start_api_as(Role::Master).await
}

/// The API as a master or an edge serves it, on the same kind of store.
pub async fn start_api_as(role: Role) -> TestApi {
    let store = TestStore::sqlite().await;
    let data = tempfile::tempdir().unwrap();
    let path = bootstrap_admin(&store.store, None, data.path())
        .await
        .unwrap()
        .expect("a first admin key is generated");
    let admin = std::fs::read_to_string(&path).unwrap().trim().to_owned();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // A second start finds the key and generates none.
    assert!(
        bootstrap_admin(&store.store, None, data.path())
            .await
            .unwrap()
            .is_none()
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = ApiState::new(store.store.clone(), role, example_drivers());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(outpost::api::serve(listener, state, async {
        let _ = rx.await;
    }));
    TestApi {
        addr,
        admin,
        store,
        _stop: tx,
        _data: data,
    }
}

impl TestApi {
    pub async fn call(
        &self,
        key: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Reply {
        self.call_with(key, method, path, &[], body).await
    }

    pub async fn call_with(
        &self,
        key: Option<&str>,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        let auth = key.map(|k| format!("Bearer {k}"));
        let mut headers: Vec<(&str, &str)> = extra.to_vec();
        if let Some(a) = &auth {
            headers.push(("Authorization", a));
        }
        request(self.addr, method, path, &headers, body).await
    }

    pub async fn admin(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        self.call(Some(&self.admin.clone()), method, path, body)
            .await
    }

    /// Creates a key with `role` for `user`; returns its text.
    pub async fn key(&self, user: &str, role: &str) -> String {
        let r = self
            .admin(
                "POST",
                "/api/v1/keys",
                Some(&serde_json::json!({"name": format!("{user} {role}"), "user": user, "role": role}).to_string()),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.json()["key"].as_str().unwrap().to_owned()
    }
}

//! Load on drivers does not reach the link: a master whose every module
//! runs a driver that never stops burning CPU keeps its edge's link alive,
//! because module tasks run on the runtime's own executor and yield to it.

use outpost::config::Config;
use outpost::model::{ControlSystem, Module, new_id};
use serde_json::json;

use crate::roles::{Site, device, eventually};

/// Burns a few million Lua instructions on every tick of a 1 ms timer: a
/// module that is never idle, each tick within the instruction budget.
const BURN: &str = r#"
local M = {}
local burns = 0
function M.on_load()
  every(1, function()
    local x = 0
    for i = 1, 4000000 do x = x + i end
    burns = burns + 1
    status.set("burns", burns)
  end)
end
return M
"#;

const BURNERS: usize = 16;

async fn import_burners(site: &Site) -> Vec<Module> {
    let burners: Vec<Module> = (0..BURNERS)
        .map(|i| device(&format!("Burner {i}"), "burn.lua", None))
        .collect();
    let hall = ControlSystem {
        id: new_id(),
        name: "Hall".into(),
        description: String::new(),
        edge_id: None,
        module_ids: burners.iter().map(|m| m.id).collect(),
        settings: Default::default(),
        stopped: false,
    };
    let file = outpost::admin::SiteFile {
        edges: vec![],
        systems: vec![hall],
        modules: burners.clone(),
    };
    let store = site.master_store().await;
    outpost::admin::import(&store, &file, &Default::default())
        .await
        .unwrap();
    store.close().await;
    burners
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_looping_on_every_master_module_get_no_edge_declared_dead() {
    let site = Site::new();
    let room = site.one_room(json!({}), &[]).await;
    site.seed_replica(room.edge_id).await;
    let dir = site.path().join("modules");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("burn.lua"), BURN).unwrap();
    let burners = import_burners(&site).await;
    let master = outpost::master::start(Config {
        modules_dir: dir,
        // The defaults' ratio, shorter: this test shares two cores with
        // the rest of the suite.
        heartbeat_ms: 500,
        dead_after_ms: 2_000,
        ..site.master_config()
    })
    .await
    .unwrap();
    let edge = outpost::edge::start(Config {
        heartbeat_ms: 500,
        dead_after_ms: 2_000,
        ..site.edge_config(room.edge_id, &room.secret, master.link_addr)
    })
    .await
    .unwrap();
    eventually(30, "the edge to connect", async || {
        master.registry.info(room.edge_id).is_some()
    })
    .await;
    let session = master.registry.info(room.edge_id).unwrap().session;
    // Not a duration: every burner has burned several times over, and the
    // link has had to carry its heartbeats all along.
    let burned = |m: &Module, n: u64| {
        master
            .runtime
            .status_key(m.id, "burns")
            .ok()
            .flatten()
            .and_then(|v| v.as_u64())
            .is_some_and(|b| b >= n)
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    while !burners.iter().all(|m| burned(m, 5)) {
        if tokio::time::Instant::now() > deadline {
            let states: Vec<String> = burners
                .iter()
                .map(|m| {
                    format!(
                        "{:?} {:?}",
                        master
                            .runtime
                            .module_info(m.id)
                            .map(|i| (i.state, i.failure)),
                        master.runtime.status_key(m.id, "burns")
                    )
                })
                .collect();
            panic!("burners did not burn five times: {states:#?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let info = master.registry.info(room.edge_id);
    assert_eq!(
        info.map(|i| i.session),
        Some(session),
        "the edge's link was declared dead while the drivers burned"
    );
    edge.stop().await;
    master.stop().await;
}

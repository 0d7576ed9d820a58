//! The console in a real headless Chromium against a real master and a
//! real `outpost edge` process: sign in, see both sites, exec on the
//! projector (the simulator receives it), kill the edge and watch the site
//! turn to "master" without a reload, restore from the button, and see a
//! 422 next to the field of a bad module. Along the way: the overview's
//! unsynced events and replica lag (live), the state of the edge-run
//! projector, and the module page following the projector across a change
//! of controller. Screenshots of each step go to
//! `target/console-screens/walkthrough/`.
//!
//! Control decisions read a manual clock, so the failover timeout passes
//! when the test says; links and devices run in real time.

use std::time::Duration;

use outpost::control::{Clock, Side};
use outpost::sim::{PjlinkOptions, PjlinkSim, Power};
use serde_json::json;

use crate::browser::Browser;
use crate::roles::{EdgeProcess, Site, device, eventually};

/// 2026-11-22 10:00 UTC.
const T0: i64 = 1_795_341_600_000;
const TIMEOUT_MS: u64 = 30_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_execs_watches_a_failover_and_restores() {
    let Some(browser) = Browser::start("walkthrough", 1280).await else {
        return;
    };
    let site = Site::new();
    let sim = PjlinkSim::start("127.0.0.1:0".parse().unwrap(), PjlinkOptions::default())
        .await
        .unwrap();
    let projector = device("Projector", "pjlink.lua", Some(sim.addr()));
    let room = site
        .one_room(
            json!({
                "name": "Sydney",
                "failover": true,
                "failover_timeout_ms": TIMEOUT_MS,
                "timezone": "Australia/Sydney",
                "admins": ["admin"],
            }),
            std::slice::from_ref(&projector),
        )
        .await;
    // A second site whose edge never comes.
    let perth: outpost::model::EdgeLocation =
        serde_json::from_value(json!({"id": outpost::model::new_id(), "name": "Perth"})).unwrap();
    {
        let store = site.master_store().await;
        let file = outpost::admin::SiteFile {
            edges: vec![perth.clone()],
            ..Default::default()
        };
        outpost::admin::import(&store, &file, &Default::default())
            .await
            .unwrap();
        store.close().await;
    }
    site.seed_replica(room.edge_id).await;
    let clock = Clock::manual(T0);
    let link = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let master_config = outpost::config::Config {
        heartbeat_ms: 200,
        dead_after_ms: 600,
        link_addr: link,
        boot_wait_ms: 10_000,
        ..site.master_config()
    };
    let key_file = master_config.data_dir.join("admin-key");
    let master = tokio::spawn(outpost::master::start_with_clock(
        master_config,
        clock.clone(),
    ));
    let edge_config = site.edge_config(room.edge_id, &room.secret, link);
    let edge = EdgeProcess::spawn(&edge_config);
    let master = master.await.unwrap().unwrap();
    let wait_controller = async |side: Side, epoch: i64| {
        eventually(
            20,
            &format!("{side} to control at epoch {epoch}"),
            async || {
                master
                    .control
                    .state(room.edge_id)
                    .is_some_and(|s| s.controller == side && s.epoch == epoch)
            },
        )
        .await;
    };
    wait_controller(Side::Edge, 1).await;
    let key = std::fs::read_to_string(&key_file)
        .unwrap()
        .trim()
        .to_owned();
    let base = format!("http://{}", master.api_addr);
    let sydney = room.edge_id.to_string();

    // 1. Sign in.
    browser.goto(&format!("{base}/")).await;
    browser.until_css("the sign-in form", "#key").await;
    browser.shot("01-sign-in").await;
    browser.fill("#key", &key).await;
    browser.click("#signin").await;

    // 2. Both sites, Sydney connected and driven by its edge.
    let row = format!("tr[data-site='{sydney}']");
    browser
        .until_css(
            "Sydney connected, controlled by its edge",
            &format!("{row}[data-link='connected'] [data-controller='edge']"),
        )
        .await;
    browser
        .until_css("Perth", &format!("tr[data-site='{}']", perth.id))
        .await;
    assert!(browser.text(&row).await.contains("epoch 1"));
    // The edge has pulled its replica and reported its event log: numbers,
    // where Perth, which never came, shows "—".
    let cell = |site: &str, name: &str| format!("tr[data-site='{site}'] td[data-cell='{name}']");
    browser
        .until(
            "Sydney's replica lag and unsynced events",
            "return /^[0-9]+$/.test(document.querySelector(arguments[0]).textContent) \
             && document.querySelector(arguments[1]).textContent === '0'",
            vec![
                json!(cell(&sydney, "unsynced")),
                json!(cell(&sydney, "lag")),
            ],
        )
        .await;
    let perth_id = perth.id.to_string();
    assert_eq!(browser.text(&cell(&perth_id, "lag")).await, "—");
    assert_eq!(browser.text(&cell(&perth_id, "unsynced")).await, "—");
    browser.shot("02-overview").await;

    // 3. Exec on the projector: the simulator powers on. The site is in
    // maintenance meanwhile, which its view shows, as it shows that its
    // edge never stopped on purpose.
    let maintenance = async |on: bool| {
        let auth = format!("Bearer {key}");
        let r = crate::http::request(
            master.api_addr,
            "PUT",
            &format!("/api/v1/edges/{sydney}/maintenance"),
            &[("Authorization", &auth)],
            Some(&json!({ "on": on }).to_string()),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
    };
    maintenance(true).await;
    browser.click(&format!("{row} a")).await;
    browser.until_css("the site's facts", "#maintenance").await;
    let shown = browser.text("#maintenance").await;
    assert!(shown.starts_with("on since"), "{shown}");
    assert_eq!(browser.text("#planned-stop").await, "none recorded");
    maintenance(false).await;
    browser
        .until_css(
            "the site's modules",
            &format!("tr[data-module='{}'] a", projector.id),
        )
        .await;
    // The edge runs the projector: its state comes from the edge.
    let projector_row = format!("tr[data-module='{}']", projector.id);
    browser
        .until_css(
            "the projector running at the edge, connected",
            &format!("{projector_row}[data-state='running'] td[data-connected='true']"),
        )
        .await;
    assert!(browser.text(&projector_row).await.contains("at the edge"));
    browser.shot("03-site").await;
    browser
        .click(&format!("tr[data-module='{}'] a", projector.id))
        .await;
    browser.until_css("the exec form", "#exec-run").await;
    browser.fill("#exec-method", "power").await;
    browser
        .until_css("the power argument", "#exec-arg-0[name='on']")
        .await;
    browser.fill("#exec-arg-0", "true").await;
    browser.click("#exec-run").await;
    browser
        .until_css("the exec answer", "#exec-result.ok")
        .await;
    eventually(10, "the projector to power on", async || {
        matches!(sim.power(), Power::Warming | Power::On)
    })
    .await;
    browser
        .until_css("the live power status", "#status dd[data-key='power']")
        .await;
    browser.shot("04-exec").await;

    // 4. Kill the edge: the site turns to "master" without a reload.
    browser.click("a[href='#/']").await;
    browser.until_css("the overview", &row).await;
    browser
        .js("window.sameDocument = true; return true", vec![])
        .await;
    edge.kill().await;
    eventually(10, "the master to see the link lost", async || {
        master.registry.peer(room.edge_id).is_none()
    })
    .await;
    browser
        .until_css("the link shown lost", &format!("{row}[data-link='lost']"))
        .await;
    // A document written while the edge is away: its replica falls behind,
    // shown without a reload.
    let auth = format!("Bearer {key}");
    let written = crate::http::request(
        master.api_addr,
        "POST",
        "/api/v1/edges",
        &[("Authorization", &auth)],
        Some(r#"{"name": "Darwin"}"#),
    )
    .await;
    assert_eq!(written.status, 201, "{}", written.body);
    browser
        .until(
            "Sydney's replica lag to grow",
            "return Number(document.querySelector(arguments[0]).textContent) > 0",
            vec![json!(cell(&sydney, "lag"))],
        )
        .await;
    eventually(10, "the takeover to be scheduled", async || {
        master.control.takeover_due(room.edge_id).is_some()
    })
    .await;
    clock.advance(Duration::from_millis(TIMEOUT_MS));
    wait_controller(Side::Master, 2).await;
    browser
        .until_css(
            "Sydney controlled by the master",
            &format!("{row} [data-controller='master']"),
        )
        .await;
    assert_eq!(
        browser
            .js("return window.sameDocument === true", vec![])
            .await,
        json!(true),
        "the page was reloaded"
    );
    assert!(browser.text(&row).await.contains("epoch 2"));
    browser.shot("05-failover").await;

    // 5. The edge is back (the master keeps the site); restore from the button.
    let edge = EdgeProcess::spawn(&edge_config);
    eventually(20, "the edge to reconnect", async || {
        master.registry.peer(room.edge_id).is_some()
    })
    .await;
    browser.click(&format!("{row} a")).await;
    browser
        .until(
            "the restore button enabled",
            "const b = document.querySelector('#restore'); return !!b && !b.disabled",
            vec![],
        )
        .await;
    browser.click("#restore").await;
    browser
        .until_css("the confirmation", "#confirm-restore[open]")
        .await;
    browser.shot("06-confirm-restore").await;
    browser.click("#confirm").await;
    wait_controller(Side::Edge, 3).await;
    browser
        .until_css(
            "Sydney controlled by its edge again",
            "#controller[data-controller='edge']",
        )
        .await;
    assert_eq!(browser.text("#epoch").await, "3");
    browser.shot("07-restored").await;

    // Planned work on the edge: hand the site to the master from the
    // button (the edge releases first), then restore it again.
    browser
        .until(
            "the handover button enabled",
            "const b = document.querySelector('#handover'); return !!b && !b.disabled",
            vec![],
        )
        .await;
    browser.click("#handover").await;
    browser
        .until_css("the confirmation", "#confirm-handover[open]")
        .await;
    browser.click("#confirm").await;
    wait_controller(Side::Master, 4).await;
    browser
        .until_css(
            "Sydney controlled by the master",
            "#controller[data-controller='master']",
        )
        .await;
    browser
        .until(
            "the restore button enabled again",
            "const b = document.querySelector('#restore'); return !!b && !b.disabled",
            vec![],
        )
        .await;
    browser.click("#restore").await;
    browser
        .until_css("the confirmation", "#confirm-restore[open]")
        .await;
    browser.click("#confirm").await;
    wait_controller(Side::Edge, 5).await;

    // 6. A module with a bad device address: 422 next to the field.
    browser.click("a[href='#/documents']").await;
    browser.click("a[href='#/documents/modules']").await;
    browser.until_css("the new-module button", "#new").await;
    browser.click("#new").await;
    browser.fill("#f-name", "Lobby display").await;
    browser.fill("#f-driver", "line.lua").await;
    browser.fill("#f-uri", "not a device address").await;
    browser.click("#save").await;
    browser
        .until(
            "the uri field's error",
            "return document.querySelector('#f-uri-error').textContent.length > 0",
            vec![],
        )
        .await;
    assert_eq!(
        browser
            .js(
                "return document.querySelector('#f-uri').getAttribute('aria-invalid')",
                vec![]
            )
            .await,
        json!("true")
    );
    browser.shot("08-field-error").await;

    // The cluster view: this master as the one node, MASTER, until masters
    // form a cluster.
    browser.click("a[href='#/cluster']").await;
    browser
        .until(
            "the single node",
            "const t = document.querySelector('#view').textContent; return t.includes('MASTER') && t.includes('single node')",
            vec![],
        )
        .await;
    browser.shot("09-cluster").await;

    // A phone-width screen: the overview's table becomes stacked cards.
    browser.client.set_window_size(390, 844).await.unwrap();
    browser.click("a[href='#/']").await;
    browser.until_css("the overview", &row).await;
    browser.shot("10-phone-overview").await;

    // 7. The module page follows the projector to the master: with the
    // page open, the edge dies and the master takes over; status, state,
    // exec and the debug stream then come from the master.
    browser.client.set_window_size(1280, 900).await.unwrap();
    browser
        .goto(&format!("{base}/#/module/{}", projector.id))
        .await;
    browser
        .until_css(
            "the projector's page, running at the edge",
            "#runs-at[data-controller='edge'] ~ #state[data-state='running']",
        )
        .await;
    browser.until_css("the debug stream", "#debug").await;
    edge.kill().await;
    eventually(10, "the master to see the link lost", async || {
        master.registry.peer(room.edge_id).is_none()
    })
    .await;
    eventually(10, "the takeover to be scheduled", async || {
        master.control.takeover_due(room.edge_id).is_some()
    })
    .await;
    clock.advance(Duration::from_millis(TIMEOUT_MS));
    wait_controller(Side::Master, 6).await;
    browser
        .until_css(
            "the projector's page, running at the master",
            "#runs-at[data-controller='master'] ~ #state[data-state='running']",
        )
        .await;
    browser
        .until_css(
            "the debug stream from the master",
            "#debug[data-subscribed='true']",
        )
        .await;
    // The lamp's hours: the projector answers them while it warms up.
    browser.fill("#exec-method", "lamp").await;
    browser.click("#exec-run").await;
    browser
        .until_css("the exec answer", "#exec-result.ok")
        .await;
    browser
        .until(
            "the lamp hours from the master",
            "return !!document.querySelector(\"#status dd[data-key='lamp_hours']\")",
            vec![],
        )
        .await;
    browser
        .until(
            "the master's debug lines",
            "return [...document.querySelectorAll('#debug li')].some(l => l.textContent.includes('LAMP ?'))",
            vec![],
        )
        .await;
    browser.shot("11-module-after-takeover").await;

    browser.close().await;
    master.stop().await;
}

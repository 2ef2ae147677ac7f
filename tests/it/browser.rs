//! The dashboard in a real headless browser: Debian's Chromium driven by `playwright-core`
//! (tests/browser/dashboard.mjs) against the gateway on a random port. Without a browser, Node or the
//! npm package the test says it was skipped and why; CI (`SWITCHYARD_REQUIRE_BROWSER=1`) requires them.
//! Screenshots of each screen go to target/screenshots/.

use std::path::{Path, PathBuf};

use crate::support::*;

/// The browser, or why there is none.
fn browser() -> Result<PathBuf, String> {
    let candidates = std::env::var("CHROMIUM")
        .into_iter()
        .chain(["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"].map(String::from));
    let found = candidates.map(PathBuf::from).find(|p| p.exists());
    let chromium = found.ok_or("no Chromium (apt-get install chromium, or set CHROMIUM)")?;
    let node = std::process::Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Err("no Node.js on PATH".into());
    }
    let package = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/node_modules/playwright-core");
    if !package.exists() {
        return Err("playwright-core is not installed (npm ci --prefix tests/browser)".into());
    }
    Ok(chromium)
}

#[tokio::test]
async fn an_organization_admin_and_a_gateway_admin_work_the_dashboard_in_a_real_browser() {
    let chromium = match browser() {
        Ok(path) => path,
        Err(why) if std::env::var_os("SWITCHYARD_REQUIRE_BROWSER").is_some() => {
            panic!("the browser tests are required here but cannot run: {why}")
        }
        Err(why) => {
            eprintln!("skipped: the dashboard's browser test needs {why}");
            return;
        }
    };
    let h = Harness::start().await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shots = root.join("target/screenshots");
    let run = tokio::process::Command::new("node")
        .arg(root.join("tests/browser/dashboard.mjs"))
        .env("BASE_URL", h.url(""))
        .env("MASTER_KEY", MASTER_KEY)
        .env("CHROMIUM", &chromium)
        .env("SHOTS", &shots)
        .env("MODEL", "test-model")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(300), run)
        .await
        .expect("the browser run finished within 5 minutes")
        .expect("node started");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the dashboard checks failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all dashboard checks passed"), "{stdout}");
    for name in ["01-sign-in", "02-keys", "04-usage", "05-plans", "09-health", "11-api-reference"] {
        assert!(shots.join(format!("{name}.png")).exists(), "screenshot {name} was written");
    }
}

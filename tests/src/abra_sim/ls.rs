//! `abra app ls [-s server] [-r recipe] [-S] [-m]` and `abra app ps <domain> [-m]`: the subset
//! of contract §6 a CI host reads (status, version, chaos, chaos version per app; per service
//! state, image and version).

use serde_json::json;

use super::Ctx;
use super::engine;
use super::layout::App;

pub async fn cmd_ls(
    ctx: &Ctx,
    server: Option<&str>,
    recipe: Option<&str>,
    status: bool,
    machine: bool,
) -> anyhow::Result<()> {
    let apps: Vec<App> = App::all(&ctx.root, &ctx.sw)?
        .into_iter()
        .filter(|a| server.is_none_or(|s| a.server == s))
        .filter(|a| recipe.is_none_or(|r| a.recipe == r))
        .collect();
    let docker = if status {
        Some(engine::connect().await?)
    } else {
        None
    };
    let mut rows = Vec::new();
    for a in &apps {
        let mut row = json!({
            "server": a.server,
            "recipe": a.recipe,
            "appName": a.domain,
            "domain": a.domain,
            "stack": a.stack,
            "version": a.pinned.clone().unwrap_or_default(),
        });
        if let Some(d) = &docker {
            let dep = engine::is_deployed(d, &a.stack).await?;
            row["status"] = json!(if dep.is_some() {
                "deployed"
            } else {
                "undeployed"
            });
            if let Some(dep) = dep {
                row["version"] = json!(dep.version.unwrap_or_default());
                row["chaos"] = json!(dep.chaos.to_string());
                row["chaosVersion"] = json!(dep.chaos_version.unwrap_or_default());
            }
        }
        rows.push(row);
    }
    if machine {
        let mut by_server = serde_json::Map::new();
        for r in rows {
            let s = r["server"].as_str().unwrap_or_default().to_owned();
            let entry = by_server
                .entry(s.clone())
                .or_insert_with(|| json!({"server": s, "apps": [], "appCount": 0}));
            if let Some(v) = entry["apps"].as_array_mut() {
                v.push(r);
            }
            let n = entry["apps"].as_array().map_or(0, Vec::len);
            entry["appCount"] = json!(n);
        }
        ctx.out
            .print(&serde_json::Value::Object(by_server).to_string());
    } else {
        ctx.out.print("SERVER\tRECIPE\tAPP\tVERSION\tSTATUS\tCHAOS");
        for r in rows {
            let f = |k: &str| r[k].as_str().unwrap_or("").to_owned();
            ctx.out.print(&format!(
                "{}\t{}\t{}\t{}\t{}\t{}",
                f("server"),
                f("recipe"),
                f("appName"),
                f("version"),
                f("status"),
                f("chaosVersion")
            ));
        }
    }
    Ok(())
}

pub async fn cmd_ps(ctx: &Ctx, domain: &str, machine: bool) -> anyhow::Result<()> {
    let app = App::find(&ctx.root, domain, &ctx.sw)?;
    let docker = engine::connect().await?;
    let services = engine::services(&docker, &app.stack).await?;
    if services.is_empty() {
        anyhow::bail!("{domain} is not deployed?");
    }
    let key = |k: &str| format!("coop-cloud.{}.{k}", app.stack);
    let mut rows = Vec::new();
    for s in &services {
        let name = engine::service_name(s);
        let labels = engine::service_labels(s);
        let tasks = engine::tasks(&docker, &name).await?;
        let running = tasks
            .iter()
            .filter(|t| {
                t.status.as_ref().and_then(|s| s.state) == Some(bollard::models::TaskState::RUNNING)
            })
            .count();
        let image = s
            .spec
            .as_ref()
            .and_then(|s| s.task_template.as_ref())
            .and_then(|t| t.container_spec.as_ref())
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        rows.push(json!({
            "service": name.strip_prefix(&format!("{}_", app.stack)).unwrap_or(&name),
            "image": image,
            "running": running,
            "version": labels.get(&key("version")).cloned().unwrap_or_default(),
            "chaos": labels.get(&key("chaos")).cloned().unwrap_or_default(),
            "chaosVersion": labels.get(&key("chaos-version")).cloned().unwrap_or_default(),
        }));
    }
    if machine {
        ctx.out.print(&serde_json::Value::Array(rows).to_string());
    } else {
        ctx.out.print("SERVICE\tIMAGE\tRUNNING\tVERSION\tCHAOS");
        for r in rows {
            ctx.out.print(&format!(
                "{}\t{}\t{}\t{}\t{}",
                r["service"].as_str().unwrap_or(""),
                r["image"].as_str().unwrap_or(""),
                r["running"],
                r["version"].as_str().unwrap_or(""),
                r["chaosVersion"].as_str().unwrap_or("")
            ));
        }
    }
    Ok(())
}

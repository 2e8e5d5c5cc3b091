//! `abra app undeploy <domain> [-n]` (contract §5): FATA `<domain> is not deployed?` when no
//! service of the stack exists; else `docker stack rm` (volumes and secrets kept), then the
//! deployed (or chaos) version is written back. By default it returns while swarm is still
//! removing the stack, as production saw.

use anyhow::bail;

use super::Ctx;
use super::engine;
use super::envfile;
use super::layout::App;

pub async fn cmd_undeploy(
    ctx: &Ctx,
    domain: &str,
    no_input: bool,
    prune: bool,
) -> anyhow::Result<()> {
    if ctx.sw.require_no_input && !no_input {
        bail!("a prompt needs a terminal: pass --no-input/-n");
    }
    let app = App::find(&ctx.root, domain, &ctx.sw)?;
    let docker = engine::connect().await?;
    let Some(deployed) = engine::is_deployed(&docker, &app.stack).await? else {
        bail!("{domain} is not deployed?");
    };
    engine::stack_rm(&app.stack, ctx.sw.undeploy_wait)?;
    if prune {
        ctx.out
            .warn("abra-sim does not prune (--prune): nothing but the stack was removed");
    }
    if let Some(v) = deployed.effective_version() {
        envfile::write_version(&app.env_path, &app.recipe, v)?;
    }
    ctx.out
        .info(&format!("undeployed {domain} (stack {})", app.stack));
    Ok(())
}

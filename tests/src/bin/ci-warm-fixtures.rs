//! Builds the demo fixtures: the static demo app and its images, and the demo recipe.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use ci_warm_tests::{images, recipe};

#[derive(Parser)]
#[command(
    name = "ci-warm-fixtures",
    about = "Builds ci-warm's demo images and demo recipe"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the static demo app and import one `ci-warm-demo:<version>` image per version.
    Images {
        /// Use this prebuilt static binary instead of building one.
        #[arg(long)]
        binary: Option<PathBuf>,
    },
    /// Create the demo recipe (a git repository) with the catalogue up to a tag.
    Recipe {
        dir: PathBuf,
        #[arg(long)]
        upto: Option<String>,
    },
    /// Publish one more catalogue release in an existing demo recipe: `tag`, or the one after
    /// the recipe's newest catalogue tag.
    Publish { dir: PathBuf, tag: Option<String> },
    /// Build the abra simulator (`abra-sim`) and print its path.
    AbraSim,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Images { binary } => {
            let binary = match binary {
                Some(b) => b,
                None => images::build_static_binary()?,
            };
            let built = images::import_images(&binary)?;
            if built.is_empty() {
                println!(
                    "demo images are up to date: {}",
                    images::VERSIONS.map(images::image).join(", ")
                );
            } else {
                println!("imported {}", built.join(", "));
            }
        }
        Cmd::Recipe { dir, upto } => {
            let r = recipe::DemoRecipe::with_catalogue(&dir, upto.as_deref())?;
            println!(
                "demo recipe at {} with tags {}",
                r.dir.display(),
                r.tags()?.join(" ")
            );
        }
        Cmd::Publish { dir, tag } => {
            let r = recipe::DemoRecipe::open(&dir)?;
            let release = match tag {
                Some(tag) => recipe::release(&tag)?,
                None => r.next_in_catalogue()?.with_context(|| {
                    format!("{} already has the whole catalogue", r.dir.display())
                })?,
            };
            r.publish(&release)?;
            println!("published {} in {}", release.tag, r.dir.display());
        }
        Cmd::AbraSim => println!("{}", ci_warm_tests::abra_sim_bin()?.display()),
    }
    Ok(())
}

//! `abra-sim`: the abra simulator of the test suite (see `ci_warm_tests::abra_sim` and
//! docs/testing.md, "The abra simulator"). Install it as `abra` on a test's PATH, or point
//! ci-warm's abra deployer at it.

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    std::process::exit(ci_warm_tests::abra_sim::run(argv));
}

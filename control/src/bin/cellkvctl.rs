//! `cellkvctl`: the operator CLI (see `control::cli`). Exit codes: 0 ok,
//! 1 the operation failed, 2 usage or connection problem.

use clap::Parser;

fn main() {
    let cli = match control::cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                control::cli::EXIT_USAGE
            } else {
                0
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start the runtime: {e}");
            std::process::exit(control::cli::EXIT_USAGE);
        }
    };
    let code = rt.block_on(control::cli::run(cli));
    std::process::exit(code);
}

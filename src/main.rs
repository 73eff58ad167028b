//! The `mtl` command (see `mtl --help`).

fn main() -> std::process::ExitCode {
    mtl::cli::main()
}

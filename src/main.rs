//! The herald binary: everything is in the library; see `herald::cli`.

fn main() -> std::process::ExitCode {
    herald::cli::main()
}

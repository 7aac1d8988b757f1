//! The proxy binary: nutcracker's command line, then the library does the rest.

fn main() -> std::process::ExitCode {
    shardproxy::proxy::cli::main()
}

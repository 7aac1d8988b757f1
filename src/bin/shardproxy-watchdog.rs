//! The watchdog binary: one per Redis instance. The library does the work
//! (`shardproxy::watchdog`).

fn main() -> std::process::ExitCode {
    shardproxy::watchdog::main()
}

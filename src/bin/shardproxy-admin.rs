//! The ops tool: `shardproxy-admin -c POOL_FILE <init|status|failover>`;
//! the library's `admin` module does the work.

fn main() -> std::process::ExitCode {
    shardproxy::admin::main()
}

// mimalloc: glibc's allocator spent a fifth of the gateway's CPU in malloc/free and arena-lock contention
// under load (perf, bench/run.sh); mimalloc's thread-local heaps remove both.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    switchyard::cli::main()
}

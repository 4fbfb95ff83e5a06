//! `warren-exec`: runs a step written in any language as child processes speaking Warren's exec
//! protocol (`docs/PROTOCOL.md`), e.g. `warren-exec -- python3 -m wordcount`.

fn main() -> std::process::ExitCode {
    warren::exec::exec_main()
}

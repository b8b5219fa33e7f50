//! `fedx`: run the gateway and administer it.

fn main() -> std::process::ExitCode {
    fedx_gateway::cli::main()
}

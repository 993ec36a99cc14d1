fn main() -> std::process::ExitCode {
    elior::cli::main()
}

//! `podcycle-judge`: compares a canary with the stable version from
//! Prometheus and exits 0 (pass), 1 (fail) or 2 (inconclusive).

#![forbid(unsafe_code)]

mod cli;
mod serve;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use podcycle_judge::{self as judge, Event, PrometheusSource, Verdict};

/// Exit code when the judge could not run at all (bad arguments, bad
/// configuration): the same as inconclusive, never a pass.
const CANNOT_JUDGE: u8 = 2;

fn main() -> ExitCode {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "serve") {
        args.remove(0);
        return ExitCode::from(serve::main(args));
    }
    let options = match cli::parse(args) {
        Ok(options) => options,
        Err(e) => {
            // --help and --version go to stdout and exit 0; a mistake goes
            // to stderr and exits 2: cannot judge, never a pass.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(CANNOT_JUDGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let mut source = match PrometheusSource::new(&options.prometheus) {
        Ok(source) => source,
        Err(e) => {
            eprintln!("podcycle-judge: {e}");
            return ExitCode::from(CANNOT_JUDGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("podcycle-judge: cannot start the runtime: {e}");
            return ExitCode::from(CANNOT_JUDGE);
        }
    };

    let quiet = options.quiet;
    if !quiet {
        let p = &options.prometheus;
        eprintln!(
            "podcycle-judge: canary {:?} against stable {:?} from {}, every {} for at most {} \
             (alpha {})",
            p.canary,
            p.stable,
            p.url,
            humantime::format_duration(options.run.interval),
            humantime::format_duration(options.run.max_duration),
            options.run.judge.alpha
        );
        for q in source.queries() {
            eprintln!("podcycle-judge: query {q}");
        }
    }
    let result = runtime.block_on(judge::run(&options.run, &mut source, |event| {
        if quiet {
            return;
        }
        match event {
            Event::Observed(report) => eprintln!("{}", report.progress_line()),
            Event::ReadFailed { elapsed, error } => {
                eprintln!(
                    "[{}] read failed: {error}",
                    humantime::format_duration(Duration::from_millis(
                        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
                    ))
                );
            }
        }
    }));
    let mut report = match result {
        Ok(report) => report,
        Err(e) => {
            eprintln!("podcycle-judge: {e}");
            return ExitCode::from(CANNOT_JUDGE);
        }
    };
    report.stable.version = Some(options.prometheus.stable.clone());
    report.canary.version = Some(options.prometheus.canary.clone());
    let verdict = report.verdict.unwrap_or(Verdict::Inconclusive);

    let mut code = verdict.exit_code();
    if let Some(path) = &options.json {
        if let Err(e) = std::fs::write(path, report.to_json() + "\n") {
            eprintln!("podcycle-judge: cannot write {}: {e}", path.display());
            // A pass whose report is missing is not a clean pass.
            if verdict == Verdict::Pass {
                code = CANNOT_JUDGE;
            }
        }
    }
    let mut stdout = std::io::stdout().lock();
    // Nothing useful to do if stdout is closed; the exit code still tells.
    let _ = writeln!(stdout, "podcycle-judge: {report}");
    ExitCode::from(code)
}

//! `podcycle-judge`: compares a canary with the stable version from
//! Prometheus and exits 0 (pass), 1 (fail) or 2 (inconclusive); 64 for a usage
//! error (bad arguments or configuration), so that a typo never reads as a verdict.

#![forbid(unsafe_code)]

mod cli;
mod serve;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use podcycle_judge::{self as judge, Event, PrometheusSource, Verdict};

/// Exit code when a judgement started but could not finish cleanly (no
/// runtime, a report that cannot be written): inconclusive, never a pass.
const CANNOT_JUDGE: u8 = 2;

fn main() -> ExitCode {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match args.get(1).and_then(|a| a.to_str()) {
        Some("serve") => {
            args.remove(0);
            return serve::main(args);
        }
        // `help` and `help serve`, as git and cargo have them.
        Some("help") => {
            let rest: Vec<_> = args.drain(2..).collect();
            return match rest.first().and_then(|a| a.to_str()) {
                None => {
                    ExitCode::from(report_parse_error(cli::parse(["podcycle-judge", "--help"])))
                }
                Some("serve") if rest.len() == 1 => {
                    serve::main(vec!["serve".into(), "--help".into()])
                }
                Some(_) => {
                    eprintln!(
                        "error: unknown help topic {:?}: try 'podcycle-judge help' or \
                         'podcycle-judge help serve'",
                        rest[0]
                    );
                    ExitCode::from(cli::USAGE_ERROR)
                }
            };
        }
        _ => {}
    }
    let options = match cli::parse(args) {
        Ok(options) => options,
        Err(e) => return ExitCode::from(report_parse_error::<()>(Err(e))),
    };
    let mut source = match PrometheusSource::new(&options.prometheus) {
        Ok(source) => source,
        Err(e) => {
            eprintln!("podcycle-judge: {e}");
            return ExitCode::from(cli::USAGE_ERROR);
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
            return ExitCode::from(cli::USAGE_ERROR);
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

/// Prints what `parse` refused: `--help` and `--version` on stdout (exit 0), a mistake on
/// stderr (exit [`cli::USAGE_ERROR`]: nothing was judged, and no verdict's code is used).
fn report_parse_error<T>(result: Result<T, clap::Error>) -> u8 {
    match result {
        Ok(_) => 0,
        Err(e) => {
            let _ = e.print();
            if e.use_stderr() {
                cli::USAGE_ERROR
            } else {
                0
            }
        }
    }
}

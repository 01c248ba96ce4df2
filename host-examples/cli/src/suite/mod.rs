//! Policy test suites: the file format, loading, running and reporting.

pub mod load;
pub mod report;
pub mod run;
pub mod spec;

pub use load::{SuiteError, TestCase, load_suites};
pub use run::{CaseResult, RunReport, run_cases};

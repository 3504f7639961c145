//! Datasets, metrics, experiment configurations, runs, reports and plots.
//!
//! This crate alone reads and writes files, parses command lines and prints; the library crates below it
//! return values and errors.
//!
//! ```
//! use experiments::data::parse_lat_lon;
//!
//! let rows = parse_lat_lon("# a comment\nlat,lon\n10.5,-20\n", "inline.csv").unwrap();
//! assert_eq!(rows, vec![(10.5, -20.0)]);
//! let err = parse_lat_lon("10.5,-20\n1,2,3\n", "inline.csv").unwrap_err();
//! assert!(err.to_string().starts_with("inline.csv:2:"));
//! ```

pub mod cli;
pub mod data;
pub mod discrete;
pub mod earth;
pub mod mad;
pub mod metrics;
pub mod mflow_exp;
pub mod ndsm_exp;
pub mod oism_exp;
pub mod plot;
pub mod progress;
pub mod run;
pub mod so3;
pub mod sphere;

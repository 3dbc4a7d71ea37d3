//! The three C modules the suite loads, built with gcc against the
//! installed server's headers: nothing else of the source tree is built.
//!
//! `regress.so` holds the suite's test functions; `autoinc.so` and
//! `refint.so` come from `contrib/spi` (the `triggers` test uses them).
//! All three must sit in one directory: the tests find them as
//! `:libdir '/<name>' :dlsuffix`, with libdir the `--dlpath` of pg_regress.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::run_tool;

/// One module: its source file in the tree and the preprocessor flags its
/// Makefile adds.
pub struct Module {
    pub name: &'static str,
    pub source: &'static str,
    pub defines: &'static [&'static str],
}

pub const MODULES: [Module; 3] = [
    Module {
        name: "regress",
        source: "src/test/regress/regress.c",
        defines: &[],
    },
    Module {
        name: "autoinc",
        source: "contrib/spi/autoinc.c",
        defines: &[],
    },
    // contrib/spi's Makefile: "this is needed for the regression tests"
    // (the expected output has refint's notices).
    Module {
        name: "refint",
        source: "contrib/spi/refint.c",
        defines: &["-DREFINT_VERBOSE"],
    },
];

/// What `pg_config` says about compiling server modules.
pub struct Toolchain {
    pub cflags: Vec<String>,
    pub cflags_sl: Vec<String>,
    pub include_server: PathBuf,
}

impl Toolchain {
    /// Reads the bindir's own `pg_config`: `/usr/bin/pg_config` may belong
    /// to another installed major version.
    pub fn probe(bindir: &Path) -> Result<Toolchain, String> {
        let ask = |flag: &str| {
            run_tool(
                Command::new(bindir.join("pg_config")).arg(flag),
                &format!("pg_config {flag}"),
            )
        };
        let words = |text: String| text.split_whitespace().map(str::to_owned).collect();
        let include_server = PathBuf::from(ask("--includedir-server")?.trim());
        if !include_server.join("postgres.h").is_file() {
            return Err(format!(
                "no server headers in {} (postgresql-server-dev not installed?)",
                include_server.display()
            ));
        }
        Ok(Toolchain {
            cflags: words(ask("--cflags")?),
            cflags_sl: words(ask("--cflags_sl")?),
            include_server,
        })
    }

    /// gcc's arguments for one shared module, as PGXS would build it.
    pub fn args(&self, module: &Module, tree: &Path, out_dir: &Path) -> Vec<String> {
        let mut args = self.cflags.clone();
        args.extend(self.cflags_sl.iter().cloned());
        args.extend(module.defines.iter().map(|d| d.to_string()));
        args.push(format!("-I{}", self.include_server.display()));
        args.push("-shared".into());
        args.push("-o".into());
        args.push(
            out_dir
                .join(format!("{}.so", module.name))
                .display()
                .to_string(),
        );
        args.push(tree.join(module.source).display().to_string());
        args
    }
}

/// Builds every module of `tree` (an unpacked source) into `out_dir`.
pub fn build_modules(bindir: &Path, tree: &Path, out_dir: &Path) -> Result<(), String> {
    let toolchain = Toolchain::probe(bindir)?;
    std::fs::create_dir_all(out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    for module in &MODULES {
        eprintln!("building {}.so...", module.name);
        let mut cmd = Command::new("gcc");
        cmd.args(toolchain.args(module, tree, out_dir));
        run_tool(&mut cmd, &format!("gcc for {}", module.source))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refint_gets_its_verbose_flag_and_every_module_is_position_independent() {
        let toolchain = Toolchain {
            cflags: vec!["-O2".into(), "-Wall".into()],
            cflags_sl: vec!["-fPIC".into()],
            include_server: "/usr/include/postgresql/15/server".into(),
        };
        let args = toolchain.args(&MODULES[2], Path::new("/src"), Path::new("/lib"));
        assert_eq!(
            args,
            [
                "-O2",
                "-Wall",
                "-fPIC",
                "-DREFINT_VERBOSE",
                "-I/usr/include/postgresql/15/server",
                "-shared",
                "-o",
                "/lib/refint.so",
                "/src/contrib/spi/refint.c"
            ]
        );
        let regress = toolchain.args(&MODULES[0], Path::new("/src"), Path::new("/lib"));
        assert!(!regress.iter().any(|a| a.starts_with("-D")));
    }
}

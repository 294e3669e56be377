//! Parsing + interpolation + validation of a generated 500-service stack, in
//! each syntax. Run with `cargo bench --bench spec`; prints the median and the
//! fastest of many runs.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use stack::spec::{Format, parse_str};

const SERVICES: usize = 500;

/// A bench case: its name, the generator of its text, its syntax.
type Case = (&'static str, fn() -> String, Format);

fn kdl_stack() -> String {
    let mut s = String::from(
        "name \"bench\"\nnetwork \"front\" subnet=\"10.80.0.0/16\"\nvolume \"data\"\n",
    );
    for i in 0..SERVICES {
        let dep = if i > 0 {
            format!("    depends-on \"svc{}\" condition=\"healthy\"\n", i - 1)
        } else {
            String::new()
        };
        s.push_str(&format!(
            "service \"svc{i}\" {{\n    image \"registry.example/app:${{TAG:-1.{i}}}\"\n    command \"/bin/app\" \"--port\" \"{port}\"\n    env MODE=\"${{MODE:-prod}}\" INDEX=\"{i}\"\n    port \"127.0.0.1:{host}:{port}\"\n    volume \"data\" \"/data/{i}\"\n    network \"front\" {{\n        alias \"alias{i}\"\n    }}\n{dep}    restart \"on-failure\" max-retries=3 {{\n        backoff min=\"100ms\" max=\"30s\"\n    }}\n    health \"wget -q -O- http://127.0.0.1:{port}/\" interval=\"5s\" retries=3\n    limits memory=\"256m\" cpus=0.5 pids=128\n    label com.example.index=\"{i}\"\n}}\n",
            host = 20000 + i,
            port = 8000 + i % 100,
        ));
    }
    s
}

fn toml_stack() -> String {
    let mut s = String::from(
        "name = \"bench\"\n[networks.front]\nsubnet = \"10.80.0.0/16\"\n[volumes.data]\n",
    );
    for i in 0..SERVICES {
        let dep = if i > 0 {
            format!("depends-on = {{ svc{} = \"healthy\" }}\n", i - 1)
        } else {
            String::new()
        };
        s.push_str(&format!(
            "[services.svc{i}]\nimage = \"registry.example/app:${{TAG:-1.{i}}}\"\ncommand = [\"/bin/app\", \"--port\", \"{port}\"]\nenv = {{ MODE = \"${{MODE:-prod}}\", INDEX = \"{i}\" }}\nports = [\"127.0.0.1:{host}:{port}\"]\nvolumes = [\"data:/data/{i}\"]\nnetworks = [{{ name = \"front\", aliases = [\"alias{i}\"] }}]\n{dep}restart = {{ policy = \"on-failure\", max-retries = 3, backoff = {{ min = \"100ms\", max = \"30s\" }} }}\nhealth = {{ command = \"wget -q -O- http://127.0.0.1:{port}/\", interval = \"5s\", retries = 3 }}\nlimits = {{ memory = \"256m\", cpus = 0.5, pids = 128 }}\nlabels = {{ \"com.example.index\" = \"{i}\" }}\n",
            host = 20000 + i,
            port = 8000 + i % 100,
        ));
    }
    s
}

fn compose_stack() -> String {
    let mut s = String::from(
        "name: bench\nnetworks:\n  front:\n    ipam:\n      config:\n        - subnet: 10.80.0.0/16\nvolumes:\n  data:\nservices:\n",
    );
    for i in 0..SERVICES {
        let dep = if i > 0 {
            format!(
                "    depends_on:\n      svc{}:\n        condition: service_healthy\n",
                i - 1
            )
        } else {
            String::new()
        };
        s.push_str(&format!(
            "  svc{i}:\n    image: registry.example/app:${{TAG:-1.{i}}}\n    command: [\"/bin/app\", \"--port\", \"{port}\"]\n    environment:\n      MODE: ${{MODE:-prod}}\n      INDEX: \"{i}\"\n    ports:\n      - \"127.0.0.1:{host}:{port}\"\n    volumes:\n      - data:/data/{i}\n    networks:\n      front:\n        aliases: [alias{i}]\n{dep}    restart: on-failure:3\n    healthcheck:\n      test: wget -q -O- http://127.0.0.1:{port}/\n      interval: 5s\n      retries: 3\n    mem_limit: 256m\n    cpus: 0.5\n    pids_limit: 128\n    labels:\n      com.example.index: \"{i}\"\n",
            host = 20000 + i,
            port = 8000 + i % 100,
        ));
    }
    s
}

fn measure(name: &str, text: &str, format: Format) {
    let vars = |_: &str| None;
    let run = || {
        let (spec, _, problems) = parse_str(text, name, format, Path::new("/srv/bench"), &vars);
        assert!(!problems.has_errors(), "the generated {name} is valid");
        spec
    };
    assert_eq!(run().map(|s| s.services.len()), Some(SERVICES));
    // Warm up, then time individual runs for at least two seconds.
    for _ in 0..5 {
        run();
    }
    let mut times: Vec<Duration> = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) || times.len() < 20 {
        let t = Instant::now();
        black_box(run());
        times.push(t.elapsed());
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "{name:<22} {SERVICES} services, {:>7} bytes: median {:>8.3} ms, fastest {:>8.3} ms ({} runs)",
        text.len(),
        median.as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times.len()
    );
}

fn main() {
    // `cargo test --benches` runs bench targets without `--bench`: stay quick.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    // `cargo bench --bench spec -- kdl` runs only the cases whose name has "kdl".
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    let cases: [Case; 3] = [
        ("stack.kdl", kdl_stack, Format::Kdl),
        ("stack.toml", toml_stack, Format::Toml),
        ("docker-compose.yml", compose_stack, Format::Compose),
    ];
    for (name, generate, format) in cases {
        if name.contains(&filter) {
            measure(name, &generate(), format);
        }
    }
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let path = std::env::args().nth(1).unwrap();
    let cfg = chorus::config::Config::load(std::path::Path::new(&path)).unwrap();
    let s = chorus::server::Server::bind(cfg).await.unwrap();
    s.run(async { tokio::signal::ctrl_c().await.unwrap(); }).await.unwrap();
}

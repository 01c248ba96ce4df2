//! The gateway in this process, on a loopback port of its own, with a
//! runtime of its own so that tests stay synchronous.

use std::path::Path;
use std::time::Duration;

use cedar_edge_gateway::config::GatewayConfig;
use cedar_edge_gateway::error::GatewayError;
use cedar_edge_gateway::{Listeners, RunSummary};
use cedar_edge_testkit::http::{self, Reply};
use tokio::sync::{mpsc, oneshot};

/// A started gateway; [`Running::stop`] drains it and flushes its audit log.
pub struct Running {
    /// The proxy's port.
    pub port: u16,
    /// The admin listener's port (`/healthz`, `/metrics`).
    pub admin_port: u16,
    /// The decision service's port, when the configuration has `pdp`.
    pub pdp_port: Option<u16>,
    /// The `ext_authz` gRPC service's port, when the configuration has one.
    pub ext_authz_port: Option<u16>,
    stop: Option<oneshot::Sender<()>>,
    runtime: tokio::runtime::Runtime,
    task: Option<tokio::task::JoinHandle<Result<RunSummary, GatewayError>>>,
}

impl Running {
    /// Starts the gateway of a configuration file and waits until
    /// `/healthz` answers.
    pub fn start(config: &Path) -> Self {
        Self::start_with(GatewayConfig::read(config).unwrap())
    }

    /// [`Running::start`] with a configuration already read (and perhaps
    /// changed).
    pub fn start_with(mut config: GatewayConfig) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let bind = || {
            runtime
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .unwrap()
        };
        let listeners = Listeners {
            proxy: config.listen.is_some().then(bind),
            pdp: config.pdp.is_some().then(bind),
            admin: Some(bind()),
            ext_authz: config.ext_authz.is_some().then(bind),
        };
        if let (Some(ext_authz), Some(listener)) =
            (config.ext_authz.as_mut(), listeners.ext_authz.as_ref())
        {
            ext_authz.listen = listener.local_addr().unwrap();
        }
        config.admin_listen = listeners
            .admin
            .as_ref()
            .map(|admin| admin.local_addr().unwrap());
        if let (Some(pdp), Some(listener)) = (config.pdp.as_mut(), listeners.pdp.as_ref()) {
            pdp.listen = listener.local_addr().unwrap();
        }
        let port_of = |listener: &Option<tokio::net::TcpListener>| {
            listener
                .as_ref()
                .map(|listener| listener.local_addr().unwrap().port())
        };
        let (port, pdp_port, ext_authz_port) = (
            port_of(&listeners.proxy).unwrap_or(0),
            port_of(&listeners.pdp),
            port_of(&listeners.ext_authz),
        );
        let admin_port = port_of(&listeners.admin).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let (reload_sender, reload) = mpsc::channel(1);
        let task = runtime.spawn(async move {
            let _keep = reload_sender;
            let shutdown = async {
                let _ = stopped.await;
            };
            cedar_edge_gateway::run(config, listeners, shutdown, reload).await
        });
        let running = Self {
            port,
            admin_port,
            pdp_port,
            ext_authz_port,
            stop: Some(stop),
            runtime,
            task: Some(task),
        };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", admin_port)).is_ok()
                && running.admin("/healthz").status == 200
            {
                return running;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the gateway did not start");
    }

    /// `GET`s an admin path (`/healthz`, `/metrics`).
    pub fn admin(&self, path: &str) -> Reply {
        http::get(self.admin_port, "GET", path, &[])
    }

    /// Sends one request with exactly these header bytes (the request
    /// target too goes out as written).
    pub fn send(&self, method: &str, target: &str, headers: &[(&str, &[u8])]) -> Reply {
        http::send(self.port, method, target, headers)
    }

    /// Sends one request with text headers.
    pub fn call(&self, method: &str, target: &str, headers: &[(&str, &str)]) -> Reply {
        http::get(self.port, method, target, headers)
    }

    /// Sends one request, with a bearer token when one is given.
    pub fn call_as(
        &self,
        method: &str,
        target: &str,
        token: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Reply {
        let bearer = token.map(|token| format!("Bearer {token}"));
        let mut headers = extra.to_vec();
        if let Some(bearer) = &bearer {
            headers.push(("authorization", bearer));
        }
        http::get(self.port, method, target, &headers)
    }

    /// `GET`, with a bearer token when one is given.
    pub fn get_as(&self, target: &str, token: Option<&str>) -> Reply {
        self.call_as("GET", target, token, &[])
    }

    /// `POST`s a JSON body.
    pub fn post_json(&self, target: &str, body: &serde_json::Value) -> Reply {
        let headers: [(&str, &[u8]); 1] = [("content-type", b"application/json")];
        http::send_with_body(
            self.port,
            "POST",
            target,
            &headers,
            body.to_string().as_bytes(),
        )
    }

    /// Stops the gateway as SIGTERM would: drains, then flushes the audit
    /// log.
    pub fn stop(mut self) -> RunSummary {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().unwrap();
        self.runtime.block_on(task).unwrap().unwrap()
    }
}

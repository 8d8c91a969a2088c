//! TLS for tests: a certificate authority of the test's own, certificates it
//! signs for `localhost`, and a TLS front for a plain TCP service (how a test
//! puts RabbitMQ behind amqps).

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};

/// A CA whose certificate is written to a file (for `SSL_CERT_FILE`), removed on drop.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
    pub dir: PathBuf,
}

/// A leaf certificate for `localhost` and 127.0.0.1, and its key, as PEM and as files.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "payment-sessions test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).unwrap();
        let dir = std::env::temp_dir().join(format!("ps-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert_pem = cert.pem();
        std::fs::write(dir.join("ca.pem"), &cert_pem).unwrap();
        TestCa { issuer: Issuer::new(params, key), cert_pem, dir }
    }

    pub fn ca_file(&self) -> String {
        self.dir.join("ca.pem").display().to_string()
    }

    pub fn leaf(&self, name: &str) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (cert_file, key_file) = (self.dir.join(format!("{name}.pem")), self.dir.join(format!("{name}.key")));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem(), cert_file, key_file }
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Leaf {
    pub fn server_config(&self) -> rustls::ServerConfig {
        ps_runtime::tls::server_config(&self.cert_file, &self.key_file).unwrap()
    }
}

/// A TLS endpoint that forwards each connection, decrypted, to `upstream`.
pub struct TlsFront {
    pub port: u16,
    /// Connections that completed a TLS handshake.
    pub handshakes: Arc<AtomicUsize>,
}

impl TlsFront {
    pub async fn start(leaf: &Leaf, upstream: std::net::SocketAddr) -> TlsFront {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(leaf.server_config()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let counted = handshakes.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (acceptor, counted) = (acceptor.clone(), counted.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(socket).await else { return };
                    counted.fetch_add(1, Ordering::SeqCst);
                    let Ok(mut plain) = TcpStream::connect(upstream).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        TlsFront { port, handshakes }
    }

    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }
}

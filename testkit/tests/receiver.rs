//! The loopback webhook receiver records POSTs, follows its script and keeps connections
//! alive.

use std::time::Duration;

use herald_testkit::{free_port, Receiver, Reply};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn records_a_post() {
    let mut receiver = Receiver::start().await.unwrap();
    assert!(receiver.url().starts_with("http://127.0.0.1:"));
    let response = reqwest::Client::new()
        .post(receiver.url())
        .header("X-Herald-Test", "yes")
        .json(&json!({"alert": "disk full", "n": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let got = receiver.next(WAIT).await.unwrap();
    assert_eq!(got.body, json!({"alert": "disk full", "n": 3}));
    assert_eq!(got.method, "POST");
    assert_eq!(got.path, "/hook");
    assert_eq!(got.status, 200);
    assert_eq!(got.header("x-herald-test"), Some("yes"));
    assert_eq!(got.header("Content-Type"), Some("application/json"));
    assert_eq!(receiver.count(), 1);
    assert!(receiver.next(Duration::from_millis(50)).await.is_err());
}

#[tokio::test]
async fn follows_its_script_then_answers_200() {
    let mut receiver = Receiver::with_script(vec![
        Reply::status(503).body("busy"),
        Reply::status(429).header("Retry-After", "2"),
    ])
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let mut answers = Vec::new();
    for n in 0..4 {
        let response = client
            .post(receiver.url())
            .json(&json!({ "n": n }))
            .send()
            .await
            .unwrap();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        answers.push((
            response.status().as_u16(),
            retry_after,
            response.text().await.unwrap(),
        ));
    }
    assert_eq!(
        answers,
        vec![
            (503, None, "busy".to_owned()),
            (429, Some("2".to_owned()), String::new()),
            (200, None, String::new()),
            (200, None, String::new()),
        ]
    );
    // Every request is recorded, whatever it was answered.
    let received = receiver.received();
    let statuses: Vec<u16> = received.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![503, 429, 200, 200]);
    let bodies: Vec<_> = received.iter().map(|r| r.body["n"].clone()).collect();
    assert_eq!(bodies, vec![json!(0), json!(1), json!(2), json!(3)]);
    for n in 0..4 {
        assert_eq!(receiver.next(WAIT).await.unwrap().body, json!({ "n": n }));
    }
}

#[tokio::test]
async fn keeps_connections_alive() {
    let receiver = Receiver::start().await.unwrap();
    let mut stream = TcpStream::connect(("127.0.0.1", receiver.port()))
        .await
        .unwrap();
    for n in 0..3 {
        let body = format!("{{\"n\":{n}}}");
        let request = format!(
            "POST /hook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        // The default reply has an empty body: read exactly one response head.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            tokio::time::timeout(WAIT, stream.read_exact(&mut byte))
                .await
                .unwrap()
                .unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("content-length: 0"),
            "{head}"
        );
    }
    assert_eq!(receiver.count(), 3);
}

#[tokio::test]
async fn can_start_listening_after_the_client_tried() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let client = reqwest::Client::new();
    let error = client.post(&url).json(&json!({})).send().await.unwrap_err();
    assert!(error.is_connect(), "{error}");

    let mut receiver = Receiver::bind(port, Vec::new()).await.unwrap();
    assert_eq!(receiver.url(), url);
    client
        .post(&url)
        .json(&json!({"late": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        receiver.next(WAIT).await.unwrap().body,
        json!({"late": true})
    );
}

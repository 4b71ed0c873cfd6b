/// Writes a value as a string and reads it back, from a server without
/// --auth-file (no token needed).
async fn hello(url: &str) -> Result<String, Box<dyn std::error::Error>> {
    use futures_util::TryStreamExt;

    let kv = kv_store_client::Client::new(url);
    let value = "hello from Rust".to_owned();
    kv.put_key(&"greeting".parse()?, None, None, None, None, None, value)
        .await?;
    let answer = kv.get_key(&"greeting".parse()?, None, None).await?;
    let chunks: Vec<_> = answer.into_inner().into_inner().try_collect().await?;
    Ok(String::from_utf8(chunks.concat())?)
}

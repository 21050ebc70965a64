//! A wasm container's module read from its image in containerd's content store, for images
//! whose layers are WebAssembly rather than tar (the media types in [`WASM_LAYER_TYPES`]).
//!
//! Used by `strata-wasm-runner` (the task's own process, in the task's cgroup), never by the
//! shim daemon: the gRPC client stays out of the shim binary that every container has one of.
//! The path is the one containerd's own Go client takes: the container record names the image,
//! the image names its target (an index or a manifest), the manifest lists the layers, and the
//! first layer of a WebAssembly media type is read by digest and checked against it.

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::{GetContainerRequest, GetImageRequest, ReadContentRequest};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::Request;
use containerd_client::with_namespace;
use serde_json::Value;
use sha2::{Digest, Sha256};
use strata_wasm::{ImageLayer, ImageRef};

/// The layer media types that hold a WebAssembly module or component (the CNCF wasm OCI
/// artifact's, the older wasm-to-oci one, and the plain one).
pub const WASM_LAYER_TYPES: &[&str] = &[
    "application/vnd.wasm.content.layer.v1+wasm",
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
    "application/wasm",
];

/// Manifests and indexes are small; anything bigger is not one.
const MAX_MANIFEST: i64 = 4 << 20;
/// The largest module read into memory.
const MAX_MODULE: i64 = 1 << 30;

const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Reads the module of `r`: the first WebAssembly layer of its container's image. The error
/// says what is missing (no image, no such layer) and names the layers that are there.
pub fn fetch(r: &ImageRef) -> Result<ImageLayer, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| format!("cannot start an I/O runtime to reach containerd: {e}"))?;
    rt.block_on(fetch_async(r))
}

fn not_in_rootfs(r: &ImageRef) -> String {
    if r.wanted.is_empty() {
        "the spec names no module (no args)".into()
    } else {
        format!(
            "the module {} does not exist in the container's root filesystem",
            r.wanted
        )
    }
}

async fn fetch_async(r: &ImageRef) -> Result<ImageLayer, String> {
    let path = r.address.strip_prefix("unix://").unwrap_or(&r.address);
    let ns = r.namespace.as_str();
    let ch = containerd_client::connect(path).await.map_err(|e| {
        format!(
            "{}, and containerd at {path} cannot be reached to read its image: {e}",
            not_in_rootfs(r)
        )
    })?;
    let container = ContainersClient::new(ch.clone())
        .get(with_namespace!(
            GetContainerRequest {
                id: r.container.clone()
            },
            ns
        ))
        .await
        .map_err(|s| format!("containerd: get container {}: {}", r.container, s.message()))?
        .into_inner()
        .container
        .ok_or_else(|| format!("containerd returned no container {}", r.container))?;
    if container.image.is_empty() {
        return Err(format!(
            "{}, and the container has no image to read WebAssembly layers from",
            not_in_rootfs(r)
        ));
    }
    let name = container.image;
    let image = ImagesClient::new(ch.clone())
        .get(with_namespace!(GetImageRequest { name: name.clone() }, ns))
        .await
        .map_err(|s| format!("containerd: get image {name}: {}", s.message()))?
        .into_inner()
        .image
        .ok_or_else(|| format!("containerd returned no image {name}"))?;
    let target = image
        .target
        .ok_or_else(|| format!("image {name} has no target descriptor"))?;
    let mut content = ContentClient::new(ch);
    let mut desc = (target.media_type, target.digest, target.size);
    let mut manifest = read_json(&mut content, ns, &desc.1, desc.2).await?;
    if INDEX_TYPES.contains(&desc.0.as_str()) || manifest.get("manifests").is_some() {
        let chosen = choose_manifest(&manifest)
            .ok_or_else(|| format!("image {name}: its index lists no manifest"))?;
        desc = chosen;
        manifest = read_json(&mut content, ns, &desc.1, desc.2).await?;
    }
    let layers: Vec<(String, String, i64)> = manifest["layers"]
        .as_array()
        .map(|ls| ls.iter().filter_map(descriptor).collect())
        .unwrap_or_default();
    let Some((media_type, digest, size)) = layers
        .iter()
        .find(|(m, _, _)| WASM_LAYER_TYPES.contains(&m.as_str()))
        .cloned()
    else {
        let have: Vec<&str> = layers.iter().map(|(m, _, _)| m.as_str()).collect();
        return Err(format!(
            "{}, and its image {name} has no WebAssembly layer (media type {}; its layers are: {})",
            not_in_rootfs(r),
            WASM_LAYER_TYPES.join(", "),
            if have.is_empty() {
                "none".to_string()
            } else {
                have.join(", ")
            }
        ));
    };
    if !(0..=MAX_MODULE).contains(&size) {
        return Err(format!(
            "image {name}: layer {digest} is {size} bytes, more than the {MAX_MODULE} a module may have"
        ));
    }
    let bytes = read_blob(&mut content, ns, &digest, size).await?;
    Ok(ImageLayer {
        bytes,
        describe: format!("layer {digest} ({media_type}) of image {name}"),
        image: name,
    })
}

/// (media type, digest, size) of a descriptor.
fn descriptor(v: &Value) -> Option<(String, String, i64)> {
    Some((
        v["mediaType"].as_str().unwrap_or_default().to_string(),
        v["digest"].as_str()?.to_string(),
        v["size"].as_i64()?,
    ))
}

/// The manifest of an index to run: one for WebAssembly (`os` wasi*/`architecture` wasm),
/// else one for this host, else the first.
fn choose_manifest(index: &Value) -> Option<(String, String, i64)> {
    let ms = index["manifests"].as_array()?;
    let platform = |m: &Value, os: &dyn Fn(&str) -> bool, arch: &dyn Fn(&str) -> bool| {
        os(m["platform"]["os"].as_str().unwrap_or_default())
            && arch(m["platform"]["architecture"].as_str().unwrap_or_default())
    };
    let host = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    ms.iter()
        .find(|m| platform(m, &|o| o.starts_with("wasi"), &|_| true))
        .or_else(|| ms.iter().find(|m| platform(m, &|_| true, &|a| a == "wasm")))
        .or_else(|| {
            ms.iter()
                .find(|m| platform(m, &|o| o == "linux", &|a| a == host))
        })
        .or_else(|| ms.first())
        .and_then(descriptor)
}

async fn read_json(
    content: &mut ContentClient<Channel>,
    ns: &str,
    digest: &str,
    size: i64,
) -> Result<Value, String> {
    if !(0..=MAX_MANIFEST).contains(&size) {
        return Err(format!(
            "{digest}: {size} bytes is too large for a manifest"
        ));
    }
    let bytes = read_blob(content, ns, digest, size).await?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{digest} is not a JSON manifest: {e}"))
}

/// Reads the blob `digest` of `size` bytes and checks it against its digest.
async fn read_blob(
    content: &mut ContentClient<Channel>,
    ns: &str,
    digest: &str,
    size: i64,
) -> Result<Vec<u8>, String> {
    let want = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("{digest}: only sha256 digests are supported"))?
        .to_string();
    let mut stream = content
        .read(with_namespace!(
            ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            },
            ns
        ))
        .await
        .map_err(|s| format!("containerd: read content {digest}: {}", s.message()))?
        .into_inner();
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(|s| format!("containerd: read content {digest}: {}", s.message()))?
    {
        bytes.extend_from_slice(&chunk.data);
        if bytes.len() as i64 > size {
            return Err(format!(
                "{digest}: longer than its descriptor's {size} bytes"
            ));
        }
    }
    let got: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if bytes.len() as i64 != size || got != want {
        return Err(format!(
            "{digest}: the content store returned {} bytes with digest sha256:{got}",
            bytes.len()
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn index_prefers_wasm_then_host_then_first() {
        let m = |os: &str, arch: &str, d: &str| {
            json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d, "size": 1,
                   "platform": {"os": os, "architecture": arch}})
        };
        let idx = json!({"manifests": [m("linux", "s390x", "a"), m("linux", "amd64", "b"), m("wasip1", "wasm", "c")]});
        assert_eq!(choose_manifest(&idx).unwrap().1, "c");
        let idx = json!({"manifests": [m("linux", "s390x", "a"), m("wasi", "wasm32", "w")]});
        assert_eq!(choose_manifest(&idx).unwrap().1, "w");
        let idx = json!({"manifests": [m("plan9", "mips", "a")]});
        assert_eq!(choose_manifest(&idx).unwrap().1, "a");
        assert!(choose_manifest(&json!({"manifests": []})).is_none());
    }
}

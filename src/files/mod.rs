//! Uploaded files: what kind of file the bytes are (by magic bytes, never by the name or
//! the declared type), where a kind lives (under UPLOAD_DIR or a bucket's prefix), the
//! size limits, and preparing a file with its 150 px thumbnail and 600 px medium
//! derivative. [`store::Store`] keeps them in the local folder or on S3 (issue 16), and
//! [`settings`] reads which.
//!
//! Stored names are random (`{uuid}.{ext}`); the client's filename is never part of a path.
//! This module does not authorize: the server checks who may read or delete a file.

pub mod http;
pub mod settings;
pub mod store;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use bytes::Bytes;

pub use store::{Download, Store, StoreError};

/// The folder of a kind of upload, as it appears in `/api/files/media/{type}/{name}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    MealPhotos,
    ProgressPhotos,
    FormPhotos,
    ProfilePhotos,
    Documents,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::MealPhotos,
        Kind::ProgressPhotos,
        Kind::FormPhotos,
        Kind::ProfilePhotos,
        Kind::Documents,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::MealPhotos => "meal_photos",
            Kind::ProgressPhotos => "progress_photos",
            Kind::FormPhotos => "form_photos",
            Kind::ProfilePhotos => "profile_photos",
            Kind::Documents => "documents",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn takes_images(self) -> bool {
        self != Kind::Documents
    }
}

/// What the first bytes of a file say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    Jpeg,
    Png,
    Webp,
    Gif,
    Pdf,
}

impl Detected {
    pub fn ext(self) -> &'static str {
        match self {
            Detected::Jpeg => "jpg",
            Detected::Png => "png",
            Detected::Webp => "webp",
            Detected::Gif => "gif",
            Detected::Pdf => "pdf",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Detected::Jpeg => "image/jpeg",
            Detected::Png => "image/png",
            Detected::Webp => "image/webp",
            Detected::Gif => "image/gif",
            Detected::Pdf => "application/pdf",
        }
    }

    pub fn is_image(self) -> bool {
        self != Detected::Pdf
    }

    pub fn from_ext(ext: &str) -> Option<Detected> {
        [
            Detected::Jpeg,
            Detected::Png,
            Detected::Webp,
            Detected::Gif,
            Detected::Pdf,
        ]
        .into_iter()
        .find(|d| d.ext() == ext)
    }

    fn image_format(self) -> Option<image::ImageFormat> {
        match self {
            Detected::Jpeg => Some(image::ImageFormat::Jpeg),
            Detected::Png => Some(image::ImageFormat::Png),
            Detected::Webp => Some(image::ImageFormat::WebP),
            Detected::Gif => Some(image::ImageFormat::Gif),
            Detected::Pdf => None,
        }
    }
}

/// Identifies a file by its magic bytes.
pub fn sniff(bytes: &[u8]) -> Option<Detected> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Detected::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Detected::Png)
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some(Detected::Webp)
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some(Detected::Gif)
    } else if bytes.starts_with(b"%PDF-") {
        Some(Detected::Pdf)
    } else {
        None
    }
}

/// The most pixels an uploaded image may have (issue 15): decoding costs 4 bytes a pixel
/// and more, so a 12000x12000 PNG of a few hundred KB took about 410 MiB to process.
pub const MAX_IMAGE_PIXELS: u64 = 40_000_000;

/// Size limits in bytes by kind, and the image pixel limit.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub image: u64,
    pub profile_photo: u64,
    pub document: u64,
    pub max_pixels: u64,
}

impl Limits {
    /// Images follow MAX_FILE_SIZE (default 10 MB); profile photos (default 5 MB, never
    /// above the image limit) and documents (default 25 MB) read MAX_PROFILE_PHOTO_SIZE and
    /// MAX_DOCUMENT_SIZE from the process environment.
    pub fn from_settings(max_file_size: u64, env: impl Fn(&str) -> Option<String>) -> Limits {
        let read = |key: &str, default: u64| {
            env(key)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|n| *n > 0)
                .unwrap_or(default)
        };
        Limits {
            image: max_file_size,
            profile_photo: read("MAX_PROFILE_PHOTO_SIZE", 5 * 1024 * 1024).min(max_file_size),
            document: read("MAX_DOCUMENT_SIZE", 25 * 1024 * 1024),
            max_pixels: MAX_IMAGE_PIXELS,
        }
    }

    pub fn for_kind(&self, kind: Kind) -> u64 {
        match kind {
            Kind::ProfilePhotos => self.profile_photo,
            Kind::Documents => self.document,
            _ => self.image,
        }
    }

    /// The largest body any upload may have (plus room for multipart framing).
    pub fn body_limit(&self) -> usize {
        let max = self.image.max(self.profile_photo).max(self.document);
        usize::try_from(max)
            .unwrap_or(usize::MAX)
            .saturating_add(64 * 1024)
    }
}

/// Why an upload was refused, in words for the 422 answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejection {
    Empty,
    TooLarge {
        limit: u64,
    },
    NotAllowed,
    Undecodable,
    TooManyPixels {
        width: u32,
        height: u32,
        limit: u64,
    },
    /// Starts like a PDF but is not one (or is one with HTML in it): the reason.
    NotPdf(&'static str),
}

impl Rejection {
    /// Over a limit of the server (413) rather than a bad file (422).
    pub fn is_limit(&self) -> bool {
        matches!(self, Rejection::TooManyPixels { .. })
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Empty => f.write_str("the file is empty"),
            Rejection::TooLarge { limit } => write!(f, "the file is larger than {limit} bytes"),
            Rejection::NotAllowed => f.write_str(
                "the file's content is not an allowed type (JPEG, PNG, WebP or GIF images; PDF documents)",
            ),
            Rejection::Undecodable => f.write_str("the image could not be decoded"),
            Rejection::TooManyPixels {
                width,
                height,
                limit,
            } => write!(
                f,
                "the image is {width}x{height} pixels; the limit is {limit} pixels ({} megapixels)",
                limit / 1_000_000
            ),
            Rejection::NotPdf(why) => write!(f, "the file starts like a PDF but {why}"),
        }
    }
}

/// Decides whether `bytes` may be stored as `kind`. Pure.
pub fn check(kind: Kind, bytes: &[u8], limits: &Limits) -> Result<Detected, Rejection> {
    if bytes.is_empty() {
        return Err(Rejection::Empty);
    }
    let limit = limits.for_kind(kind);
    if bytes.len() as u64 > limit {
        return Err(Rejection::TooLarge { limit });
    }
    let detected = match sniff(bytes) {
        Some(d) if d.is_image() == kind.takes_images() => d,
        _ => return Err(Rejection::NotAllowed),
    };
    if detected == Detected::Pdf {
        check_pdf(bytes).map_err(Rejection::NotPdf)?;
    }
    if let Some(format) = detected.image_format() {
        // The header alone: nothing is decoded or allocated for the pixels here.
        let (width, height) = image::ImageReader::with_format(std::io::Cursor::new(bytes), format)
            .into_dimensions()
            .map_err(|_| Rejection::Undecodable)?;
        if u64::from(width) * u64::from(height) > limits.max_pixels {
            return Err(Rejection::TooManyPixels {
                width,
                height,
                limit: limits.max_pixels,
            });
        }
    }
    Ok(detected)
}

/// Markers of HTML (or SVG script) that have no business in a PDF: a file holding them is a
/// polyglot meant to run in a browser that sniffs it (issue 15).
const HTML_MARKERS: [&[u8]; 7] = [
    b"<!doctype",
    b"<html",
    b"<head",
    b"<body",
    b"<script",
    b"<iframe",
    b"<svg",
];

/// Parses a PDF far enough to tell a document from a polyglot: a `%PDF-x.y` header, an end
/// of file marker (`%%EOF` in the last KiB, as readers require) preceded by `startxref` and
/// an offset, a cross-reference section (`xref` table with `trailer`, or an `/XRef`
/// stream), and no HTML markers anywhere (case-insensitive). `Err` says what is missing.
pub fn check_pdf(bytes: &[u8]) -> Result<(), &'static str> {
    let header_ok = bytes.len() > 8
        && bytes.starts_with(b"%PDF-")
        && bytes[5].is_ascii_digit()
        && bytes[6] == b'.'
        && bytes[7].is_ascii_digit();
    if !header_ok {
        return Err("has no %PDF-x.y header");
    }
    let tail = &bytes[bytes.len().saturating_sub(1024)..];
    let eof = rfind(tail, b"%%EOF").ok_or("has no %%EOF marker at its end")?;
    let before_eof = &tail[..eof];
    let startxref = rfind(before_eof, b"startxref").ok_or("has no startxref before %%EOF")?;
    let offset = before_eof[startxref + b"startxref".len()..]
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .take_while(|b| b.is_ascii_digit())
        .count();
    if offset == 0 {
        return Err("has no cross-reference offset after startxref");
    }
    let has_table = find(bytes, b"xref").is_some() && find(bytes, b"trailer").is_some();
    let has_stream = find(bytes, b"/Type/XRef").is_some() || find(bytes, b"/Type /XRef").is_some();
    if !has_table && !has_stream {
        return Err("has no cross-reference table or stream");
    }
    let lower = bytes.to_ascii_lowercase();
    if HTML_MARKERS.iter().any(|m| find(&lower, m).is_some()) {
        return Err("contains HTML; upload a plain PDF");
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

/// Derivative sizes: the longest side in pixels.
pub const THUMBNAIL_PX: u32 = 150;
pub const MEDIUM_PX: u32 = 600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Original,
    Thumbnail,
    Medium,
}

impl Size {
    /// What [`Size::parse`] accepts (`?size=` of a download).
    pub const NAMES: &'static [&'static str] = &["original", "thumbnail", "medium"];

    pub fn parse(s: &str) -> Option<Size> {
        match s {
            "original" => Some(Size::Original),
            "thumbnail" => Some(Size::Thumbnail),
            "medium" => Some(Size::Medium),
            _ => None,
        }
    }

    fn dir(self) -> Option<&'static str> {
        match self {
            Size::Original => None,
            Size::Thumbnail => Some("thumbnail"),
            Size::Medium => Some("medium"),
        }
    }
}

/// Is `name` one we could have made (`{32 hex}.{known ext}`)? Anything else, `../` included,
/// is refused before it reaches a path.
pub fn is_stored_name(name: &str) -> bool {
    let Some((stem, ext)) = name.split_once('.') else {
        return false;
    };
    stem.len() == 32
        && stem
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        && Detected::from_ext(ext).is_some()
}

/// The public URL of a stored file.
pub fn media_url(kind: Kind, name: &str) -> String {
    format!("/api/files/media/{}/{name}", kind.as_str())
}

/// The kind and stored name in a URL made by [`media_url`] (a `?size=` is ignored).
pub fn parse_media_url(url: &str) -> Option<(Kind, String)> {
    let path = url.split('?').next()?;
    let rest = path.strip_prefix("/api/files/media/")?;
    let (kind, name) = rest.split_once('/')?;
    let kind = Kind::parse(kind)?;
    is_stored_name(name).then(|| (kind, name.to_string()))
}

pub fn random_name(d: Detected) -> String {
    format!("{}.{}", uuid::Uuid::new_v4().simple(), d.ext())
}

/// The path of a stored file or its derivative. `name` must pass [`is_stored_name`].
pub fn path_of(root: &Path, kind: Kind, size: Size, name: &str) -> PathBuf {
    debug_assert!(is_stored_name(name));
    let mut p = root.join(kind.as_str());
    if let Some(d) = size.dir() {
        p.push(d);
    }
    p.push(name);
    p
}

/// The path relative to UPLOAD_DIR, for nginx's internal location.
pub fn relative_path(kind: Kind, size: Size, name: &str) -> String {
    match size.dir() {
        Some(d) => format!("{}/{d}/{name}", kind.as_str()),
        None => format!("{}/{name}", kind.as_str()),
    }
}

/// An upload ready to store: its fresh random name and its files, the original first,
/// then the derivatives of an image.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub name: String,
    pub files: Vec<(Size, Bytes)>,
}

/// Names `bytes` (already [`check`]ed) and makes the derivatives of an image. Blocking
/// (decoding and encoding): run it off the async workers.
pub fn prepare(detected: Detected, bytes: Vec<u8>) -> Result<Prepared> {
    let name = random_name(detected);
    let mut files = Vec::with_capacity(3);
    if let Some(format) = detected.image_format() {
        // `check` read the size from the header; the decoder's own limits hold even if
        // the header lied (image's default allocation cap is 512 MiB).
        let img = image::ImageReader::with_format(std::io::Cursor::new(&bytes), format)
            .decode()
            .map_err(|_| anyhow::Error::new(UndecodableImage))?;
        files.push((
            Size::Thumbnail,
            Bytes::from(encode(&img.thumbnail(THUMBNAIL_PX, THUMBNAIL_PX), format)?),
        ));
        files.push((
            Size::Medium,
            Bytes::from(encode(&img.thumbnail(MEDIUM_PX, MEDIUM_PX), format)?),
        ));
    }
    files.insert(0, (Size::Original, Bytes::from(bytes)));
    Ok(Prepared { name, files })
}

/// Writes a prepared upload into the folder `root`. Blocking. On failure the files
/// already written are removed again.
pub fn write_local(root: &Path, kind: Kind, prepared: &Prepared) -> Result<()> {
    for (i, (size, data)) in prepared.files.iter().enumerate() {
        if let Err(e) = write_atomic(&path_of(root, kind, *size, &prepared.name), data) {
            for (size, _) in &prepared.files[..i] {
                let _ = std::fs::remove_file(path_of(root, kind, *size, &prepared.name));
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Marks a decoding failure so the server can answer 422 rather than 500.
#[derive(Debug, thiserror::Error)]
#[error("the image could not be decoded")]
pub struct UndecodableImage;

fn encode(img: &image::DynamicImage, format: image::ImageFormat) -> Result<Vec<u8>> {
    let mut out = std::io::Cursor::new(Vec::new());
    // JPEG has no alpha channel; the encoder refuses RGBA input.
    let img = if format == image::ImageFormat::Jpeg {
        image::DynamicImage::ImageRgb8(img.to_rgb8())
    } else {
        img.clone()
    };
    img.write_to(&mut out, format)
        .context("failed to encode an image derivative")?;
    Ok(out.into_inner())
}

/// Uploads are world-readable (0644): behind nginx they are served by its worker, which
/// runs as another user than the API, through `X-Accel-Redirect`.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::fsutil::write_atomic(path, bytes, 0o644)
}

/// Removes stored files and their derivatives; a file already gone is fine.
pub fn remove_blocking(root: &Path, files: &[(Kind, String)]) {
    for (kind, name) in files {
        if !is_stored_name(name) {
            continue;
        }
        for size in [Size::Original, Size::Thumbnail, Size::Medium] {
            let p = path_of(root, *kind, size, name);
            if let Err(e) = std::fs::remove_file(&p) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %p.display(), error = %e, "failed to remove upload");
                }
            }
        }
    }
}

/// [`remove_blocking`] on the blocking pool.
pub async fn remove_stored(root: &Path, files: &[(Kind, String)]) {
    let root = root.to_path_buf();
    let files = files.to_vec();
    let _ = tokio::task::spawn_blocking(move || remove_blocking(&root, &files)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        image: 100,
        profile_photo: 50,
        document: 200,
        max_pixels: 40_000_000,
    };

    /// A PNG signature and IHDR chunk for a 1-bit grey image of `w` x `h`: enough for the
    /// header check, with no pixel data at all.
    fn png_header(w: u32, h: u32) -> Vec<u8> {
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend_from_slice(&w.to_be_bytes());
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[1, 0, 0, 0, 0]);
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        for (len, chunk) in [(13u32, ihdr), (0, b"IDAT".to_vec())] {
            png.extend_from_slice(&len.to_be_bytes());
            png.extend_from_slice(&chunk);
            png.extend_from_slice(&crc32fast::hash(&chunk).to_be_bytes());
        }
        png
    }

    /// The smallest well-formed PDF: one empty page, an xref table and a trailer.
    pub const MINIMAL_PDF: &[u8] = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n\
2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n\
3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 10 10] >> endobj\n\
xref\n0 4\n0000000000 65535 f \n0000000009 00000 n \n0000000058 00000 n \n0000000115 00000 n \n\
trailer << /Size 4 /Root 1 0 R >>\nstartxref\n182\n%%EOF\n";

    #[test]
    fn pdfs_are_parsed_far_enough_to_refuse_polyglots() {
        assert_eq!(check_pdf(MINIMAL_PDF), Ok(()));
        let html = b"%PDF-1.4\n<html><body><script>alert(document.cookie)</script></body></html>";
        assert_eq!(check_pdf(html), Err("has no %%EOF marker at its end"));
        let mut dressed = b"%PDF-1.4\n<HTML><Script>alert(1)</Script>\n".to_vec();
        dressed.extend_from_slice(&MINIMAL_PDF[9..]);
        assert_eq!(
            check_pdf(&dressed),
            Err("contains HTML; upload a plain PDF")
        );
        assert_eq!(check_pdf(b"%PDF-\n%%EOF"), Err("has no %PDF-x.y header"));
        assert_eq!(
            check_pdf(b"%PDF-1.7\nstuff\n%%EOF"),
            Err("has no startxref before %%EOF")
        );
        assert_eq!(
            check_pdf(b"%PDF-1.7\nstuff\nstartxref\n12\n%%EOF"),
            Err("has no cross-reference table or stream")
        );
        let stream =
            b"%PDF-1.7\n5 0 obj << /Type /XRef /Size 6 >> stream\nendstream\nstartxref\n9\n%%EOF";
        assert_eq!(check_pdf(stream), Ok(()));
        assert_eq!(
            Rejection::NotPdf("contains HTML; upload a plain PDF").to_string(),
            "the file starts like a PDF but contains HTML; upload a plain PDF"
        );
    }

    #[test]
    fn pixels_are_checked_from_the_header() {
        let big = Limits {
            image: 1 << 20,
            ..LIMITS
        };
        assert_eq!(
            check(Kind::MealPhotos, &png_header(12_000, 12_000), &big),
            Err(Rejection::TooManyPixels {
                width: 12_000,
                height: 12_000,
                limit: 40_000_000
            })
        );
        assert_eq!(
            Rejection::TooManyPixels {
                width: 12_000,
                height: 12_000,
                limit: 40_000_000
            }
            .to_string(),
            "the image is 12000x12000 pixels; the limit is 40000000 pixels (40 megapixels)"
        );
        assert_eq!(
            check(Kind::MealPhotos, &png_header(8_000, 5_000), &big),
            Ok(Detected::Png),
            "exactly 40 megapixels is allowed"
        );
        assert_eq!(
            check(Kind::MealPhotos, &png_header(8_000, 5_001), &big).map_err(|r| r.is_limit()),
            Err(true)
        );
    }

    #[test]
    fn sniffs_by_content() {
        assert_eq!(sniff(b"\xFF\xD8\xFF\xE0rest"), Some(Detected::Jpeg));
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nrest"), Some(Detected::Png));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(Detected::Webp));
        assert_eq!(sniff(b"GIF89a..."), Some(Detected::Gif));
        assert_eq!(sniff(b"%PDF-1.7"), Some(Detected::Pdf));
        assert_eq!(sniff(b"MZ\x90\0 a windows exe"), None);
    }

    #[test]
    fn checks_kind_size_and_type() {
        let png = png_header(10, 10);
        assert_eq!(check(Kind::MealPhotos, &png, &LIMITS), Ok(Detected::Png));
        assert_eq!(check(Kind::MealPhotos, b"", &LIMITS), Err(Rejection::Empty));
        assert_eq!(
            check(Kind::ProfilePhotos, &[0xFF; 60], &LIMITS),
            Err(Rejection::TooLarge { limit: 50 })
        );
        assert_eq!(
            check(Kind::MealPhotos, b"MZ\x90\0", &LIMITS),
            Err(Rejection::NotAllowed)
        );
        assert_eq!(
            check(Kind::Documents, &png, &LIMITS),
            Err(Rejection::NotAllowed)
        );
        assert_eq!(
            check(Kind::MealPhotos, b"%PDF-1.4", &LIMITS),
            Err(Rejection::NotAllowed)
        );
        let big = Limits {
            document: 1 << 20,
            ..LIMITS
        };
        assert_eq!(check(Kind::Documents, MINIMAL_PDF, &big), Ok(Detected::Pdf));
        assert!(matches!(
            check(Kind::Documents, b"%PDF-1.4", &LIMITS),
            Err(Rejection::NotPdf(_))
        ));
    }

    #[test]
    fn stored_names_only() {
        let name = random_name(Detected::Png);
        assert!(is_stored_name(&name), "{name}");
        for bad in [
            "../etc/passwd",
            "a.png",
            &format!("../{name}"),
            "0123456789abcdef0123456789abcdef.exe",
        ] {
            assert!(!is_stored_name(bad), "{bad}");
        }
        let url = media_url(Kind::MealPhotos, &name);
        assert_eq!(
            parse_media_url(&format!("{url}?size=medium")),
            Some((Kind::MealPhotos, name.clone()))
        );
        assert_eq!(
            parse_media_url("/api/files/media/meal_photos/../x.png"),
            None
        );
        assert_eq!(
            relative_path(Kind::MealPhotos, Size::Thumbnail, &name),
            format!("meal_photos/thumbnail/{name}")
        );
    }

    #[test]
    fn limits_from_settings() {
        let l = Limits::from_settings(10, |k| (k == "MAX_DOCUMENT_SIZE").then(|| "30".to_string()));
        assert_eq!((l.image, l.profile_photo, l.document), (10, 10, 30));
    }

    #[test]
    fn stores_png_with_derivatives() {
        let dir = tempfile::tempdir().unwrap();
        let img = image::RgbaImage::from_pixel(1000, 500, image::Rgba([1, 2, 3, 255]));
        let mut png = std::io::Cursor::new(Vec::new());
        img.write_to(&mut png, image::ImageFormat::Png).unwrap();
        let prepared = prepare(Detected::Png, png.into_inner()).unwrap();
        assert_eq!(
            prepared.files.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            [Size::Original, Size::Thumbnail, Size::Medium]
        );
        write_local(dir.path(), Kind::MealPhotos, &prepared).unwrap();
        let name = prepared.name;
        let thumb = image::open(path_of(
            dir.path(),
            Kind::MealPhotos,
            Size::Thumbnail,
            &name,
        ))
        .unwrap();
        assert_eq!((thumb.width(), thumb.height()), (150, 75));
        let medium =
            image::open(path_of(dir.path(), Kind::MealPhotos, Size::Medium, &name)).unwrap();
        assert_eq!(medium.width(), 600);
        remove_blocking(dir.path(), &[(Kind::MealPhotos, name.clone())]);
        assert!(!path_of(dir.path(), Kind::MealPhotos, Size::Original, &name).exists());
        assert!(!path_of(dir.path(), Kind::MealPhotos, Size::Medium, &name).exists());
    }
}

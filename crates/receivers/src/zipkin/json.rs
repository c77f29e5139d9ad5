//! Zipkin v2 JSON (`[{"traceId": "...", "id": "...", ...}, ...]`, the `ListOfSpans` of
//! zipkin2-api.yaml).
//!
//! Only broken JSON, or a body that is not an array, fails the whole request. Every field is
//! read leniently, so that one span with a wrong-typed field becomes one invalid span while
//! the rest of the request goes through: the decoder records what it found instead of
//! failing, and [`JsonSpan::into_span`] turns that into a precise per-span error. Lenient in
//! what real clients send: Envoy up to 1.14 wrote `timestamp`/`duration` as strings
//! (envoyproxy/envoy#9341), some clients send numbers or booleans as tag values, and `null`
//! means absent everywhere. Strings without escapes are borrowed from the body, so ids and
//! numeric strings cost no allocation.

use super::model::{Annotation, Endpoint, Kind, ZipkinSpan, check_ids, hex_id, shorten};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// Decodes a Zipkin v2 JSON body: the whole request fails only when the JSON is broken or
/// not an array; each element is `Ok(span)` or `Err(why that span is invalid)`.
pub(crate) fn decode(body: &[u8]) -> Result<Vec<Result<ZipkinSpan, String>>, String> {
    let spans: Vec<Lenient<JsonSpan<'_>>> = serde_json::from_slice(body)
        .map_err(|e| format!("malformed Zipkin v2 JSON (expected an array of spans): {e}"))?;
    Ok(spans
        .into_iter()
        .map(|s| match s {
            Lenient::Ok(s) => s.into_span(),
            Lenient::Absent => Err("span is null".to_string()),
            Lenient::Bad(found) => Err(format!("span is {found}, not a JSON object")),
        })
        .collect())
}

/// A JSON value of any type, as far as a scalar field cares: strings borrowed when possible,
/// containers skipped and only noted.
#[derive(Debug, Default, PartialEq)]
enum Scalar<'a> {
    #[default]
    Null,
    Str(Cow<'a, str>),
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Object,
    Array,
}

impl Scalar<'_> {
    /// "a string", "an object"... for error messages.
    fn found(&self) -> &'static str {
        match self {
            Scalar::Null => "null",
            Scalar::Str(_) => "a string",
            Scalar::U64(_) | Scalar::I64(_) | Scalar::F64(_) => "a number",
            Scalar::Bool(_) => "a boolean",
            Scalar::Object => "an object",
            Scalar::Array => "an array",
        }
    }

    /// Text of a string, number or boolean; `None` for null; an error for containers.
    fn text(self, field: &str) -> Result<Option<String>, String> {
        Ok(Some(match self {
            Scalar::Null => return Ok(None),
            Scalar::Str(s) => s.into_owned(),
            Scalar::U64(v) => v.to_string(),
            Scalar::I64(v) => v.to_string(),
            Scalar::F64(v) => v.to_string(),
            Scalar::Bool(v) => v.to_string(),
            other => {
                return Err(format!(
                    "`{field}` must be a string, found {}",
                    other.found()
                ));
            }
        }))
    }

    /// A hex id: only a string will do; null or `""` is `None`.
    fn id<const N: usize>(&self, field: &str) -> Result<Option<[u8; N]>, String> {
        match self {
            Scalar::Null => Ok(None),
            Scalar::Str(s) if s.is_empty() => Ok(None),
            Scalar::Str(s) => hex_id::<N>(field, s).map(Some),
            other => Err(format!(
                "`{field}` must be a string of hex digits, found {}",
                other.found()
            )),
        }
    }

    /// Microseconds: a non-negative integer, also written as a string or as a float; null
    /// is 0 (absent).
    fn micros(&self, field: &str) -> Result<u64, String> {
        match self {
            Scalar::Null => Ok(0),
            Scalar::U64(v) => Ok(*v),
            Scalar::F64(v) if v.is_finite() && *v >= 0.0 => Ok(*v as u64),
            Scalar::Str(s) => s.trim().parse::<u64>().map_err(|_| {
                format!(
                    "`{field}` must be a non-negative integer (microseconds), found `{}`",
                    shorten(s)
                )
            }),
            Scalar::I64(v) => Err(format!("`{field}` must not be negative, found {v}")),
            other => Err(format!(
                "`{field}` must be a non-negative integer (microseconds), found {}",
                other.found()
            )),
        }
    }

    /// A boolean, also written as the string `"true"`/`"false"`; null is false.
    fn flag(&self, field: &str) -> Result<bool, String> {
        match self {
            Scalar::Null => Ok(false),
            Scalar::Bool(b) => Ok(*b),
            Scalar::Str(s) if s.eq_ignore_ascii_case("true") => Ok(true),
            Scalar::Str(s) if s.eq_ignore_ascii_case("false") || s.is_empty() => Ok(false),
            other => Err(format!(
                "`{field}` must be true or false, found {}",
                other.found()
            )),
        }
    }

    /// A port in 1..=65535 (number or numeric string); anything else is absent (0).
    fn port(&self) -> u16 {
        let v = match self {
            Scalar::U64(v) => *v,
            Scalar::I64(_) => 0,
            Scalar::Str(s) => s.trim().parse().unwrap_or(0),
            _ => 0,
        };
        u16::try_from(v).unwrap_or(0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Scalar<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Str(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Str(Cow::Owned(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar<'a>, E> {
                Ok(Scalar::U64(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar<'a>, E> {
                Ok(if v >= 0 {
                    Scalar::U64(v as u64)
                } else {
                    Scalar::I64(v)
                })
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar<'a>, E> {
                Ok(Scalar::F64(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Scalar<'a>, D::Error> {
                Scalar::deserialize(d)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Scalar<'a>, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Object)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Scalar<'a>, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Array)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// An object-typed field read leniently: the object, absent (`null` or missing), or what
/// was found instead.
#[derive(Debug, Default)]
enum Lenient<T> {
    Ok(T),
    #[default]
    Absent,
    Bad(&'static str),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Lenient<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Lenient<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(m)).map(Lenient::Ok)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Lenient<T>, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Lenient::Bad("an array"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Lenient<T>, E> {
                Ok(Lenient::Absent)
            }
            fn visit_none<E: de::Error>(self) -> Result<Lenient<T>, E> {
                Ok(Lenient::Absent)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Lenient<T>, D::Error> {
                Lenient::deserialize(d)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Lenient<T>, E> {
                Ok(Lenient::Bad("a string"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Lenient<T>, E> {
                Ok(Lenient::Bad("a number"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Lenient<T>, E> {
                Ok(Lenient::Bad("a number"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Lenient<T>, E> {
                Ok(Lenient::Bad("a number"))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Lenient<T>, E> {
                Ok(Lenient::Bad("a boolean"))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// `annotations` or `tags`: a container field read leniently, like [`Lenient`] but for
/// arrays and maps.
#[derive(Debug, Default)]
struct Container<T> {
    items: T,
    bad: Option<&'static str>,
}

/// `Endpoint` as written in JSON.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct JsonEndpoint<'a> {
    #[serde(borrow)]
    service_name: Scalar<'a>,
    #[serde(borrow)]
    ipv4: Scalar<'a>,
    #[serde(borrow)]
    ipv6: Scalar<'a>,
    #[serde(borrow)]
    port: Scalar<'a>,
}

/// `Annotation` as written in JSON.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct JsonAnnotation<'a> {
    #[serde(borrow)]
    timestamp: Scalar<'a>,
    #[serde(borrow)]
    value: Scalar<'a>,
}

/// A Zipkin v2 span as written in JSON, every field read leniently.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct JsonSpan<'a> {
    #[serde(borrow)]
    trace_id: Scalar<'a>,
    #[serde(borrow)]
    parent_id: Scalar<'a>,
    #[serde(borrow)]
    id: Scalar<'a>,
    #[serde(borrow)]
    kind: Scalar<'a>,
    #[serde(borrow)]
    name: Scalar<'a>,
    #[serde(borrow)]
    timestamp: Scalar<'a>,
    #[serde(borrow)]
    duration: Scalar<'a>,
    #[serde(borrow)]
    shared: Scalar<'a>,
    #[serde(borrow)]
    local_endpoint: Lenient<JsonEndpoint<'a>>,
    #[serde(borrow)]
    remote_endpoint: Lenient<JsonEndpoint<'a>>,
    #[serde(borrow)]
    annotations: Container<Vec<Lenient<JsonAnnotation<'a>>>>,
    #[serde(borrow)]
    tags: Container<Vec<(String, Scalar<'a>)>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Container<Vec<Lenient<JsonAnnotation<'a>>>> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Container<Vec<Lenient<JsonAnnotation<'a>>>>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of annotations")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::with_capacity(s.size_hint().unwrap_or(0).min(64));
                while let Some(a) = s.next_element()? {
                    items.push(a);
                }
                Ok(Container { items, bad: None })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(bad("an object"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Container::default())
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Container::default())
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                Deserialize::deserialize(d)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(bad("a string"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(bad("a number"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(bad("a number"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(bad("a number"))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(bad("a boolean"))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Container<Vec<(String, Scalar<'a>)>> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Container<Vec<(String, Scalar<'a>)>>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of tags")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::with_capacity(m.size_hint().unwrap_or(0).min(64));
                while let Some(entry) = m.next_entry()? {
                    items.push(entry);
                }
                Ok(Container { items, bad: None })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(bad("an array"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Container::default())
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Container::default())
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                Deserialize::deserialize(d)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(bad("a string"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(bad("a number"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(bad("a number"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(bad("a number"))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(bad("a boolean"))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

fn bad<T: Default>(found: &'static str) -> Container<T> {
    Container {
        items: T::default(),
        bad: Some(found),
    }
}

impl JsonEndpoint<'_> {
    fn into_endpoint(self, field: &str) -> Result<Endpoint, String> {
        let service_name = self
            .service_name
            .text(&format!("{field}.serviceName"))?
            .unwrap_or_default();
        // Unparsable addresses are left out, as Zipkin's server does.
        let ip = |s: &Scalar<'_>| match s {
            Scalar::Str(s) => Some(s.trim().to_string()),
            _ => None,
        };
        Ok(Endpoint {
            service_name,
            ipv4: ip(&self.ipv4).and_then(|s| s.parse().ok()),
            ipv6: ip(&self.ipv6).and_then(|s| s.parse().ok()),
            port: self.port.port(),
        })
    }
}

fn endpoint(field: &str, e: Lenient<JsonEndpoint<'_>>) -> Result<Option<Endpoint>, String> {
    match e {
        Lenient::Ok(e) => e.into_endpoint(field).map(Some),
        Lenient::Absent => Ok(None),
        Lenient::Bad(found) => Err(format!("`{field}` must be an object, found {found}")),
    }
}

impl JsonSpan<'_> {
    /// The checked span, or why it is invalid (the first problem found).
    fn into_span(self) -> Result<ZipkinSpan, String> {
        let trace_id = self
            .trace_id
            .id::<16>("traceId")?
            .ok_or("`traceId` is missing")?;
        let id = self.id.id::<8>("id")?.ok_or("`id` is missing")?;
        let parent_id = self.parent_id.id::<8>("parentId")?;
        let parent_id = check_ids(trace_id, id, parent_id, "traceId", "id")?;
        let kind = match self.kind.text("kind")? {
            None => None,
            Some(k) if k.is_empty() => None,
            Some(k) => Some(Kind::parse(&k).ok_or_else(|| {
                format!(
                    "`kind` `{}` is not CLIENT, SERVER, PRODUCER or CONSUMER",
                    shorten(&k)
                )
            })?),
        };
        let name = self.name.text("name")?.unwrap_or_default();
        let timestamp = self.timestamp.micros("timestamp")?;
        let duration = self.duration.micros("duration")?;
        let shared = self.shared.flag("shared")?;
        let local_endpoint = endpoint("localEndpoint", self.local_endpoint)?;
        let remote_endpoint = endpoint("remoteEndpoint", self.remote_endpoint)?;

        if let Some(found) = self.annotations.bad {
            return Err(format!("`annotations` must be an array, found {found}"));
        }
        let mut annotations = Vec::with_capacity(self.annotations.items.len());
        for (i, a) in self.annotations.items.into_iter().enumerate() {
            let a = match a {
                Lenient::Ok(a) => a,
                Lenient::Absent => continue,
                Lenient::Bad(found) => {
                    return Err(format!(
                        "`annotations[{i}]` must be an object, found {found}"
                    ));
                }
            };
            annotations.push(Annotation {
                timestamp: a.timestamp.micros(&format!("annotations[{i}].timestamp"))?,
                value: a
                    .value
                    .text(&format!("annotations[{i}].value"))?
                    .unwrap_or_default(),
            });
        }

        if let Some(found) = self.tags.bad {
            return Err(format!("`tags` must be an object, found {found}"));
        }
        let mut tags = Vec::with_capacity(self.tags.items.len());
        for (k, v) in self.tags.items {
            match v {
                Scalar::Object | Scalar::Array => {
                    return Err(format!(
                        "tag `{}` is {}; Zipkin tag values are strings",
                        shorten(&k),
                        v.found()
                    ));
                }
                // A null tag carries nothing.
                Scalar::Null => {}
                v => {
                    let text = v.text("tags")?.unwrap_or_default();
                    tags.push((k, text));
                }
            }
        }

        Ok(ZipkinSpan {
            trace_id,
            id,
            parent_id,
            kind,
            name,
            timestamp,
            duration,
            local_endpoint,
            remote_endpoint,
            annotations,
            tags,
            shared,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn one(json: &str) -> Result<ZipkinSpan, String> {
        let mut v = decode(json.as_bytes()).expect("valid JSON");
        assert_eq!(v.len(), 1);
        v.remove(0)
    }

    #[test]
    fn envoy_span_with_string_timestamps() {
        // The shape Envoy 1.12-1.14 sent (timestamp and duration as strings).
        let s = one(r#"[{
            "traceId": "83713138fa14c726", "id": "83713138fa14c726", "kind": "SERVER",
            "name": "www.hello", "timestamp": "1572849988488551", "duration": "7131",
            "localEndpoint": {"serviceName": "envoy-cluster", "ipv4": "172.31.0.5"},
            "tags": {"http.status_code": "200", "response_flags": "-", "component": "proxy"}
        }]"#)
        .unwrap();
        assert_eq!(
            s.trace_id[8..],
            [0x83, 0x71, 0x31, 0x38, 0xfa, 0x14, 0xc7, 0x26]
        );
        assert_eq!(s.trace_id[..8], [0; 8]);
        assert_eq!(s.kind, Some(Kind::Server));
        assert_eq!(s.timestamp, 1_572_849_988_488_551);
        assert_eq!(s.duration, 7131);
        let le = s.local_endpoint.unwrap();
        assert_eq!(le.service_name, "envoy-cluster");
        assert_eq!(le.ipv4, Some(Ipv4Addr::new(172, 31, 0, 5)));
        assert_eq!(
            s.tags,
            vec![
                ("http.status_code".into(), "200".into()),
                ("response_flags".into(), "-".into()),
                ("component".into(), "proxy".into()),
            ]
        );
    }

    #[test]
    fn every_field() {
        let s = one(r#"[{
            "traceId": "463AC35C9F6413AD48485A3953BB6124", "parentId": "0020000000000001",
            "id": "48485a3953bb6124", "kind": "client", "name": "get /api",
            "timestamp": 1.5e6, "duration": 10, "debug": true, "shared": "true",
            "localEndpoint": {"serviceName": "frontend", "ipv6": "2001:db8::c001", "port": "8080"},
            "remoteEndpoint": {"serviceName": "backend", "ipv4": "not an ip", "port": 70000},
            "annotations": [{"timestamp": 1500001, "value": "ws"}, null, {"value": "wr"}],
            "tags": {"n": 3, "b": false, "x": null, "f": 0.5},
            "unknownField": {"ignored": [1, 2]}
        }]"#)
        .unwrap();
        assert_eq!(s.trace_id[0], 0x46);
        assert_eq!(s.parent_id, Some([0, 0x20, 0, 0, 0, 0, 0, 1]));
        assert_eq!(s.kind, Some(Kind::Client));
        assert_eq!(s.timestamp, 1_500_000);
        assert!(s.shared);
        let le = s.local_endpoint.unwrap();
        assert_eq!(le.ipv6.unwrap().to_string(), "2001:db8::c001");
        assert_eq!(le.port, 8080);
        let re = s.remote_endpoint.unwrap();
        assert_eq!(
            (re.service_name.as_str(), re.ipv4, re.port),
            ("backend", None, 0)
        );
        assert_eq!(
            s.annotations,
            vec![
                Annotation {
                    timestamp: 1_500_001,
                    value: "ws".into()
                },
                Annotation {
                    timestamp: 0,
                    value: "wr".into()
                }
            ]
        );
        assert_eq!(
            s.tags,
            vec![
                ("n".into(), "3".into()),
                ("b".into(), "false".into()),
                ("f".into(), "0.5".into())
            ]
        );
    }

    #[test]
    fn nulls_mean_absent() {
        let s = one(
            r#"[{"traceId":"1","id":"2","parentId":null,"kind":null,"name":null,
            "timestamp":null,"localEndpoint":null,"annotations":null,"tags":null,"debug":null}]"#,
        )
        .unwrap();
        assert_eq!(s.parent_id, None);
        assert_eq!(s.kind, None);
        assert_eq!((s.name.as_str(), s.timestamp), ("", 0));
        assert!(s.local_endpoint.is_none() && s.annotations.is_empty() && s.tags.is_empty());
    }

    #[test]
    fn one_bad_span_does_not_fail_the_others() {
        let spans = decode(
            br#"[
            {"traceId": "1", "id": "2"},
            {"traceId": "xyz", "id": "2"},
            {"id": "2"},
            {"traceId": "1"},
            {"traceId": "1", "id": "2", "timestamp": {"a": 1}},
            {"traceId": "1", "id": "2", "kind": "INTERNAL"},
            {"traceId": "1", "id": "2", "tags": {"k": {"nested": true}}},
            {"traceId": "1", "id": "2", "tags": ["a"]},
            {"traceId": "1", "id": "2", "localEndpoint": "frontend"},
            {"traceId": "1", "id": "2", "annotations": [5]},
            {"traceId": 1, "id": "2"},
            {"traceId": "0", "id": "2"},
            {"traceId": "1", "id": "2", "duration": -4},
            7,
            {"traceId": "1", "id": "3"}
        ]"#,
        )
        .unwrap();
        let errs: Vec<String> = spans
            .iter()
            .map(|r| r.as_ref().err().cloned().unwrap_or_default())
            .collect();
        assert_eq!(
            errs,
            [
                "",
                "`traceId` `xyz` is not hex (0-9, a-f)",
                "`traceId` is missing",
                "`id` is missing",
                "`timestamp` must be a non-negative integer (microseconds), found an object",
                "`kind` `INTERNAL` is not CLIENT, SERVER, PRODUCER or CONSUMER",
                "tag `k` is an object; Zipkin tag values are strings",
                "`tags` must be an object, found an array",
                "`localEndpoint` must be an object, found a string",
                "`annotations[0]` must be an object, found a number",
                "`traceId` must be a string of hex digits, found a number",
                "`traceId` is all zeros",
                "`duration` must not be negative, found -4",
                "span is a number, not a JSON object",
                "",
            ]
        );
    }

    #[test]
    fn broken_json_fails_the_request_with_its_position() {
        let e = decode(b"[{\"traceId\": \"1\",\n \"id\": }]").unwrap_err();
        assert!(e.starts_with("malformed Zipkin v2 JSON"), "{e}");
        assert!(e.contains("line 2 column"), "{e}");
        let e = decode(br#"{"traceId": "1"}"#).unwrap_err();
        assert!(e.contains("expected an array of spans"), "{e}");
        assert!(decode(b"").unwrap_err().contains("EOF"));
        assert!(decode(b"[]").unwrap().is_empty());
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let s = one(r#"[{"traceId":"1","id":"2","name":"say \"hi\"","tags":{"k\u00e9":"v\n"}}]"#)
            .unwrap();
        assert_eq!(s.name, "say \"hi\"");
        assert_eq!(s.tags, vec![("ké".to_string(), "v\n".to_string())]);
    }
}

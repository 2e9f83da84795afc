//! A cache exported to the real registry and imported by a fresh store: every step comes from
//! the cache, only the layers needed are fetched, and `mode=max` / `mode=min` decide which
//! stages' steps are exported.

use std::collections::BTreeSet;

use super::super::harness::{Kiln, assert_success};
use super::{
    CACHE_MEDIA_TYPE, MULTI, SINGLE, build_json, cache_manifest, context, ctx_path, digests,
    from_import, has_blob, layers_of, of_type, ran,
};

#[test]
fn a_fresh_store_builds_everything_from_a_registry_cache() {
    let k = Kiln::new();
    let cache = format!("{}/ci/app:buildcache", k.registry.addr());
    let to = format!("type=registry,ref={cache}");
    let from = to.clone();

    // Machine A builds and exports (mode=min, the default).
    let ctx_a = context(SINGLE, "hello\n");
    let a = build_json(
        &k,
        k.root.path(),
        "app:a",
        &ctx_path(&ctx_a),
        &["--cache-to", &to],
    );
    assert_eq!(ran(&a).len(), 5, "{a:?}");
    let exported = of_type(&a, "cache.exported");
    assert_eq!(exported.len(), 1, "{a:?}");
    assert_eq!(exported[0]["records"], 5);
    assert_eq!(
        exported[0]["layers"], 4,
        "WORKDIR's directory exists already: no layer"
    );

    // Any OCI tool sees a manifest with the kiln cache document as config and the layers.
    let manifest = cache_manifest(&cache);
    assert_eq!(
        manifest["config"]["mediaType"], CACHE_MEDIA_TYPE,
        "{manifest}"
    );
    let image_a_layers = layers_of(k.root.path(), "app:a");
    let cached_layers: BTreeSet<String> = digests(&manifest["layers"]).into_iter().collect();
    for layer in &image_a_layers[1..] {
        assert!(cached_layers.contains(layer), "{layer} not in {manifest}");
    }

    // Machine B: an empty store, the context copied elsewhere.
    let root_b = k.fresh_store();
    let ctx_b = context(SINGLE, "hello\n");
    let b = build_json(
        &k,
        root_b.path(),
        "app:b",
        &ctx_path(&ctx_b),
        &["--cache-from", &from],
    );
    assert!(ran(&b).is_empty(), "nothing runs: {:?}", ran(&b));
    assert_eq!(from_import(&b).len(), 5, "{b:?}");
    assert_eq!(of_type(&b, "cache.imported")[0]["records"], 5);
    assert_eq!(
        k.image_id_in(root_b.path(), "app:b"),
        k.image_id_in(k.root.path(), "app:a")
    );
    // Only what the image needs came over: the base's and the image's own blobs.
    let layers_b = layers_of(root_b.path(), "app:b");
    assert_eq!(layers_b, image_a_layers);
    let blobs_b = std::fs::read_dir(root_b.path().join("blobs/sha256"))
        .unwrap()
        .count();
    // Base manifest + config + layer, the image's manifest + config + 4 layers, the cache
    // document.
    assert_eq!(blobs_b, 3 + 2 + 4 + 1, "{layers_b:?}");

    // Nothing dangles: every record written locally has its layer.
    let check = k.cmd_in(root_b.path(), &["check"]);
    assert_success(&check, &["check"]);

    // The imported records are now local: a third build needs no import.
    let again = build_json(&k, root_b.path(), "app:c", &ctx_path(&ctx_b), &[]);
    assert!(ran(&again).is_empty(), "{again:?}");
    assert!(from_import(&again).is_empty());
    assert_eq!(of_type(&again, "step.cached").len(), 5);

    // A changed source misses from its COPY on; the steps before it still come from the cache.
    let ctx_c = context(SINGLE, "changed\n");
    let root_c = k.fresh_store();
    let changed = build_json(
        &k,
        root_c.path(),
        "app:d",
        &ctx_path(&ctx_c),
        &["--cache-from", &from],
    );
    assert_eq!(
        from_import(&changed),
        vec!["RUN head -c 32 /dev/urandom > /seed"]
    );
    assert_eq!(
        ran(&changed),
        vec![
            "COPY app.txt /app/",
            "RUN cat /app/app.txt /seed > /app/out && head -c 8 /dev/urandom >> /app/out",
            "WORKDIR /app",
            "RUN touch /app/empty-dir-marker && rm /app/empty-dir-marker",
        ]
    );
    // The RUN on top of the imported step needed its layer unpacked: fetched, not rebuilt.
    assert_eq!(
        layers_of(root_c.path(), "app:d")[1],
        image_a_layers[1],
        "the /seed layer is the exported one"
    );
}

#[test]
fn mode_max_serves_other_targets_and_mode_min_does_not() {
    let k = Kiln::new();
    let max = format!("{}/ci/multi:max", k.registry.addr());
    let min = format!("{}/ci/multi:min", k.registry.addr());
    let ctx_a = context(MULTI, "");
    let a = build_json(
        &k,
        k.root.path(),
        "multi:a",
        &ctx_path(&ctx_a),
        &[
            "--cache-to",
            &format!("type=registry,ref={max},mode=max"),
            "--cache-to",
            &format!("type=registry,ref={min}"),
        ],
    );
    let exported = of_type(&a, "cache.exported");
    assert_eq!(exported.len(), 2);
    assert_eq!(exported[0]["records"], 4, "max: both stages");
    assert_eq!(exported[1]["records"], 2, "min: the app stage");
    let app_layers = layers_of(k.root.path(), "multi:a");
    let app_run_layer = app_layers.last().unwrap().clone();

    // The intermediate stage as the target, on machine A (local cache) and on B (max import).
    build_json(
        &k,
        k.root.path(),
        "tools:a",
        &ctx_path(&ctx_a),
        &["--target", "tools"],
    );
    let tools_a_layers = layers_of(k.root.path(), "tools:a");
    let root_b = k.fresh_store();
    let ctx_b = context(MULTI, "");
    let b = build_json(
        &k,
        root_b.path(),
        "tools:b",
        &ctx_path(&ctx_b),
        &[
            "--target",
            "tools",
            "--cache-from",
            &format!("type=registry,ref={max}"),
        ],
    );
    assert!(ran(&b).is_empty(), "{b:?}");
    assert_eq!(from_import(&b).len(), 2);
    assert_eq!(
        k.image_id_in(root_b.path(), "tools:b"),
        k.image_id_in(k.root.path(), "tools:a")
    );
    assert!(
        !has_blob(root_b.path(), &app_run_layer),
        "the app stage's layer is cached but not needed, so not fetched"
    );

    // The full build on another empty store: every step of both stages comes from the
    // cache, and the COPY --from is known by its definition, so the tools stage — cached but
    // not in the final image — is never fetched.
    let root_d = k.fresh_store();
    let full = build_json(
        &k,
        root_d.path(),
        "multi:d",
        &ctx_path(&ctx_b),
        &["--cache-from", &format!("type=registry,ref={max}")],
    );
    assert!(ran(&full).is_empty(), "{full:?}");
    assert_eq!(from_import(&full).len(), 4, "{full:?}");
    assert_eq!(
        k.image_id_in(root_d.path(), "multi:d"),
        k.image_id_in(k.root.path(), "multi:a")
    );
    // (The /tool layer may be fetched: the COPY's layer can be the same bytes.)
    let big_layer = &tools_a_layers[1];
    assert!(
        !has_blob(root_d.path(), big_layer),
        "{big_layer} was fetched"
    );
    for layer in &app_layers {
        assert!(has_blob(root_d.path(), layer));
    }

    // A changed later step still hits everything before it (mode=max): here a new RUN at the
    // end of the app stage.
    let changed = MULTI.replace(
        "head -c 16 /dev/urandom > /rand\n",
        "head -c 16 /dev/urandom > /rand\nRUN echo more > /more\n",
    );
    assert_ne!(changed, MULTI);
    let ctx_e = context(&changed, "");
    let root_e = k.fresh_store();
    let e = build_json(
        &k,
        root_e.path(),
        "multi:e",
        &ctx_path(&ctx_e),
        &["--cache-from", &format!("type=registry,ref={max}")],
    );
    assert_eq!(ran(&e), vec!["RUN echo more > /more"], "{e:?}");
    assert_eq!(
        layers_of(root_e.path(), "multi:e")[..app_layers.len()],
        app_layers[..]
    );

    // min holds only the app stage: another machine must build tools itself.
    let root_c = k.fresh_store();
    let c = build_json(
        &k,
        root_c.path(),
        "tools:c",
        &ctx_path(&ctx_b),
        &[
            "--target",
            "tools",
            "--cache-from",
            &format!("type=registry,ref={min}"),
        ],
    );
    assert_eq!(ran(&c).len(), 2, "{c:?}");
}

//! `#[bounded]`, for espmail's tests: an async test whose body must finish within a time
//! limit, so a deadlock fails in seconds instead of stalling CI until its own time limit.
//!
//! Put it **above** the runtime attribute, which then sees the rewritten body:
//!
//! ```ignore
//! #[bounded]              // 120 s, the default
//! #[tokio::test]
//! async fn saves_are_answered() { … }
//!
//! #[bounded(secs = 30)]
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn quick() { … }
//! ```
//!
//! The body becomes `tokio::time::timeout(limit, async move { body }).await`, which panics
//! with the test's name and the limit when the limit passes. A blocking call inside the
//! body (a `std::thread::sleep`, a synchronous wait on a child process) is not interrupted
//! by it; the tests keep those bounded themselves.

use proc_macro::TokenStream;
use quote::quote;
use syn::parse::Parser;
use syn::{parse_macro_input, ItemFn};

/// Seconds a test may run when the attribute does not say.
const DEFAULT_SECS: u64 = 120;

/// Wraps an async test's body in a time limit (`#[bounded]` or `#[bounded(secs = N)]`).
#[proc_macro_attribute]
pub fn bounded(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut secs = DEFAULT_SECS;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("secs") {
            let lit: syn::LitInt = meta.value()?.parse()?;
            secs = lit.base10_parse()?;
            Ok(())
        } else {
            Err(meta.error("expected `secs = N`"))
        }
    });
    if let Err(e) = parser.parse(attr) {
        return e.to_compile_error().into();
    }
    let mut func = parse_macro_input!(item as ItemFn);
    if func.sig.asyncness.is_none() {
        return syn::Error::new_spanned(&func.sig, "#[bounded] is for async tests")
            .to_compile_error()
            .into();
    }
    let name = func.sig.ident.to_string();
    let body = &func.block;
    let wrapped: syn::Block = syn::parse_quote!({
        match ::tokio::time::timeout(
            ::std::time::Duration::from_secs(#secs),
            async move #body,
        )
        .await
        {
            ::std::result::Result::Ok(out) => out,
            ::std::result::Result::Err(_) => ::std::panic!(
                "test {} did not finish within {} s (a hang, or a wait that is not bounded)",
                #name,
                #secs
            ),
        }
    });
    func.block = Box::new(wrapped);
    quote!(#func).into()
}

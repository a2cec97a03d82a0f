// `sqlx::migrate!` embeds the migrations at compile time but does not tell Cargo about files
// added to the directories: without this, an incremental build keeps the old set.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}

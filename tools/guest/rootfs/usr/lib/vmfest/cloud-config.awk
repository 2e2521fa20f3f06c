# Parses the subset of cloud-init YAML that vmfest writes (user-data and meta-data) with busybox awk.
# Writes each value it understands into a file under the directory given as -v out=DIR:
#   DIR/hostname, DIR/fqdn, DIR/local-hostname, DIR/instance-id   top-level scalars
#   DIR/ssh_authorized_keys                                       one key per line
#   DIR/ssh_keys/<type>_private, DIR/ssh_keys/<type>_public       ssh_keys entries (block scalars kept)
# Values are written to files, never evaluated, so a hostile seed cannot run code here.
# The caller creates DIR and DIR/ssh_keys.
# Handled YAML: "key: value", quoted scalars, "- item" lists (indented or not), "|" block scalars.

function unquote(v) {
  if (v ~ /^'.*'$/) { v = substr(v, 2, length(v) - 2); gsub(/''/, "'", v); return v }
  if (v ~ /^".*"$/) { v = substr(v, 2, length(v) - 2); gsub(/\\"/, "\"", v); gsub(/\\\\/, "\\", v); return v }
  sub(/[ \t]+#.*$/, "", v)     # plain scalar: " #" starts a comment
  return v
}
function indent_of(s) { match(s, /^ */); return RLENGTH }
function trim(s) { sub(/^[ \t]+/, "", s); sub(/[ \t]+$/, "", s); return s }
function emit(file, text) { print text > file; files[file] = 1 }
function end_block() { if (blockfile != "") close(blockfile); inblock = 0; blockfile = "" }

BEGIN { top = ""; inblock = 0; blockfile = "" }

{ sub(/\r$/, "") }

# Lines of a "|" block scalar: everything indented deeper than its key; the first line sets the indent.
inblock {
  if ($0 ~ /^[ \t]*$/) next
  ind = indent_of($0)
  if (ind > blockkeyind) {
    if (blockind < 0) blockind = ind
    emit(blockfile, substr($0, blockind + 1))
    next
  }
  end_block()
}

/^[ \t]*#/ || /^[ \t]*$/ || /^---/ || /^\.\.\./ { next }

{
  ind = indent_of($0)
  line = trim($0)

  # List item: under ssh_authorized_keys, at any indentation (YAML allows "- " at the key's column).
  if (line ~ /^-( |$)/) {
    if (top == "ssh_authorized_keys") {
      item = unquote(trim(substr(line, 2)))
      if (item != "") emit(out "/ssh_authorized_keys", item)
    }
    next
  }

  colon = index(line, ":")
  if (colon == 0) next
  key = trim(substr(line, 1, colon - 1))
  val = trim(substr(line, colon + 1))

  if (ind == 0) {
    top = key
    if (key == "hostname" || key == "fqdn" || key == "local-hostname" || key == "instance-id") {
      val = unquote(val)
      if (val != "") emit(out "/" key, val)
    }
    next
  }

  if (top == "ssh_keys" && key ~ /^(ed25519|ecdsa|rsa)_(private|public)$/) {
    f = out "/ssh_keys/" key
    if (val ~ /^\|[-+]?$/) {
      inblock = 1; blockkeyind = ind; blockind = -1; blockfile = f
    } else {
      val = unquote(val)
      if (val != "") { emit(f, val); close(f) }
    }
  }
}

END { end_block() }

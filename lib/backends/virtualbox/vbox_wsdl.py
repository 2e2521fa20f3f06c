#!/usr/bin/env python3
"""Derives what vmfest's VirtualBox backend builds from VirtualBox's own WSDLs.

  vbox_wsdl.py subset OPERATIONS OUT.wsdl VBOXWEB.wsdl...
      One WSDL holding only the listed operations (and the closure of their types), merged over the
      given VirtualBox versions: an element child that some version lacks becomes optional
      (minOccurs="0"), an enumeration holds every version's values. Everything else is copied as
      VirtualBox wrote it, so wsdl2h + soapcpp2 see VirtualBox's own declarations. Which child a
      given version wants is the client's business (it detects the server's version); the test
      double checks every message against that version's full schema.

  vbox_wsdl.py schema VBOXWEB.wsdl OUT.xsd
      The WSDL's <xsd:schema>, verbatim, as a standalone XML Schema (for xmllint and libxml2).
"""
import re
import sys
import xml.etree.ElementTree as ET

WSDL = "http://schemas.xmlsoap.org/wsdl/"
XSD = "http://www.w3.org/2001/XMLSchema"
VBOX = "http://www.virtualbox.org/"
FAULTS = ["InvalidObjectFault", "RuntimeFault"]


def fail(message):
    sys.exit(f"vbox_wsdl.py: {message}")


def load_schema(path):
    root = ET.parse(path).getroot()
    schema = root.find(f"{{{WSDL}}}types/{{{XSD}}}schema")
    if schema is None:
        fail(f"{path} has no wsdl:types/xsd:schema")
    elements = {e.get("name"): e for e in schema.findall(f"{{{XSD}}}element")}
    types = {t.get("name"): t for t in schema if t.tag in (f"{{{XSD}}}simpleType", f"{{{XSD}}}complexType")}
    return {"path": path, "elements": elements, "types": types}


def sequence_children(declaration):
    sequence = declaration.find(f".//{{{XSD}}}sequence")
    return [] if sequence is None else list(sequence)


def merge_sequence(name, versions):
    """The newest version's sequence, with children that another version lacks made optional."""
    newest = versions[-1]
    merged = [child for child in sequence_children(newest)]
    names = [child.get("name") for child in merged]
    for version in versions[:-1]:
        own = [child.get("name") for child in sequence_children(version)]
        positions = [names.index(n) if n in names else -1 for n in own]
        if -1 in positions or positions != sorted(positions):
            fail(f"{name}: children {own} are not an ordered subset of the newest version's {names}")
        for child in sequence_children(version):
            other = merged[names.index(child.get("name"))]
            if child.attrib != other.attrib:
                fail(f"{name}/{child.get('name')}: declared differently across versions")
    present_everywhere = set(names)
    for version in versions[:-1]:
        present_everywhere &= {child.get("name") for child in sequence_children(version)}
    result = []
    for child in merged:
        copy = ET.Element(child.tag, dict(child.attrib))
        if child.get("name") not in present_everywhere:
            copy.set("minOccurs", "0")
        result.append(copy)
    return result


def with_sequence(declaration, children):
    copy = ET.fromstring(ET.tostring(declaration))
    sequence = copy.find(f".//{{{XSD}}}sequence")
    if sequence is not None:
        for child in list(sequence):
            sequence.remove(child)
        sequence.extend(children)
    return copy


def merge_enumeration(name, versions):
    values = []
    for version in reversed(versions):
        for value in version.iter(f"{{{XSD}}}enumeration"):
            if value.get("value") not in values:
                values.append(value.get("value"))
    copy = ET.fromstring(ET.tostring(versions[-1]))
    restriction = copy.find(f"{{{XSD}}}restriction")
    for child in list(restriction):
        restriction.remove(child)
    for value in values:
        ET.SubElement(restriction, f"{{{XSD}}}enumeration", {"value": value})
    return copy


def referenced_types(declaration):
    return [t[len("vbox:"):] for e in declaration.iter() for t in [e.get("type") or e.get("base") or ""]
            if t.startswith("vbox:")]


def serialize(element, indent):
    """Writes an XML Schema element with the xsd: prefix, attributes as VirtualBox wrote them."""
    tag = "xsd:" + element.tag.split("}")[1]
    attributes = "".join(f' {key}="{value}"' for key, value in element.attrib.items())
    children = list(element)
    if not children:
        return f"{indent}<{tag}{attributes}/>\n"
    inner = "".join(serialize(child, indent + "  ") for child in children)
    return f"{indent}<{tag}{attributes}>\n{inner}{indent}</{tag}>\n"


def subset(operations_file, out_path, wsdl_paths):
    operations = [line.strip() for line in open(operations_file) if line.strip() and not line.startswith("#")]
    versions = [load_schema(path) for path in wsdl_paths]

    def merged_element(name):
        found = [v["elements"].get(name) for v in versions]
        if None in found:
            fail(f"element {name} is missing from {versions[found.index(None)]['path']}")
        return with_sequence(found[-1], merge_sequence(name, found))

    elements = [merged_element(op + suffix) for op in operations for suffix in ("", "Response")]
    elements += [merged_element(fault) for fault in FAULTS]

    types, pending = {}, [t for e in elements for t in referenced_types(e)]
    while pending:
        name = pending.pop()
        if name in types:
            continue
        found = [v["types"].get(name) for v in versions if name in v["types"]]
        if found[-1].tag == f"{{{XSD}}}simpleType":
            types[name] = merge_enumeration(name, found)
        else:
            types[name] = with_sequence(found[-1], merge_sequence(name, found))
        pending += referenced_types(types[name])

    out = [
        '<?xml version="1.0" encoding="utf-8"?>\n',
        "<!-- Generated by vmfest's vbox_wsdl.py from " + ", ".join(wsdl_paths) + ":\n"
        "     the operations in " + operations_file + ", merged over those versions. Do not edit. -->\n",
        f'<wsdl:definitions xmlns:wsdl="{WSDL}" xmlns:xsd="{XSD}" '
        f'xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/" xmlns:vbox="{VBOX}" '
        f'name="VirtualBox" targetNamespace="{VBOX}">\n',
        "  <wsdl:types>\n",
        f'    <xsd:schema targetNamespace="{VBOX}">\n',
    ]
    out += [serialize(types[name], "      ") for name in sorted(types)]
    out += [serialize(element, "      ") for element in elements]
    out.append("    </xsd:schema>\n  </wsdl:types>\n")
    for fault in FAULTS:
        out.append(f'  <wsdl:message name="{fault}Msg"><wsdl:part name="fault" element="vbox:{fault}"/>'
                   "</wsdl:message>\n")
    for op in operations:
        out.append(f'  <wsdl:message name="{op}RequestMsg"><wsdl:part name="parameters" '
                   f'element="vbox:{op}"/></wsdl:message>\n')
        out.append(f'  <wsdl:message name="{op}ResultMsg"><wsdl:part name="parameters" '
                   f'element="vbox:{op}Response"/></wsdl:message>\n')
    faults = "".join(f'<wsdl:fault name="{f}" message="vbox:{f}Msg"/>' for f in FAULTS)
    out.append('  <wsdl:portType name="vboxPortType">\n')
    for op in operations:
        out.append(f'    <wsdl:operation name="{op}"><wsdl:input message="vbox:{op}RequestMsg"/>'
                   f'<wsdl:output message="vbox:{op}ResultMsg"/>{faults}</wsdl:operation>\n')
    out.append("  </wsdl:portType>\n")
    out.append('  <wsdl:binding name="vboxBinding" type="vbox:vboxPortType">\n'
               '    <soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>\n')
    fault_bindings = "".join(f'<wsdl:fault name="{f}"><soap:fault name="{f}" use="literal"/></wsdl:fault>'
                             for f in FAULTS)
    for op in operations:
        out.append(f'    <wsdl:operation name="{op}"><soap:operation soapAction="" style="document"/>'
                   '<wsdl:input><soap:body use="literal"/></wsdl:input>'
                   f'<wsdl:output><soap:body use="literal"/></wsdl:output>{fault_bindings}</wsdl:operation>\n')
    out.append("  </wsdl:binding>\n")
    out.append('  <wsdl:service name="vboxService"><wsdl:port name="vboxServicePort" binding="vbox:vboxBinding">'
               '<soap:address location="http://localhost:18083/"/></wsdl:port></wsdl:service>\n')
    out.append("</wsdl:definitions>\n")
    with open(out_path, "w") as f:
        f.writelines(out)


def schema(wsdl_path, out_path):
    text = open(wsdl_path, encoding="utf-8").read()
    start = re.search(r"<xsd:schema\b[^>]*>", text)
    end = text.find("</xsd:schema>")
    if start is None or end < 0:
        fail(f"{wsdl_path} has no <xsd:schema>")
    # The schema's QName values (type="vbox:...") rely on prefixes declared on wsdl:definitions.
    opening = start.group(0).replace("<xsd:schema", f'<xsd:schema xmlns:xsd="{XSD}" xmlns:vbox="{VBOX}"', 1)
    with open(out_path, "w", encoding="utf-8") as f:
        f.write('<?xml version="1.0" encoding="utf-8"?>\n')
        f.write(f"<!-- The XML Schema of {wsdl_path}, extracted verbatim by vmfest's vbox_wsdl.py. -->\n")
        f.write(opening + text[start.end():end] + "</xsd:schema>\n")


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "subset":
        subset(sys.argv[2], sys.argv[3], sys.argv[4:])
    elif len(sys.argv) == 4 and sys.argv[1] == "schema":
        schema(sys.argv[2], sys.argv[3])
    else:
        fail(__doc__)

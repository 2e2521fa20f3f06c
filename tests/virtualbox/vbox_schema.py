#!/usr/bin/env python3
"""vmfest's description of vboxwebsrv (lib/backends/virtualbox/vboxweb.gsoap), per VirtualBox version.

The description is one for all versions: a child that only some versions have is optional there.
VERSION_RULES below says which versions have it. From the two, this tool derives each version's
request and response shapes, and checks them against VirtualBox's own WSDLs.

  vbox_schema.py versions OWN.xsd OUT_DIR VERSION...
      Writes OUT_DIR/vbox-VERSION.xsd: an XML Schema of the described elements as VERSION shapes
      them, for the test double, which checks every message against the schema of the version it
      plays. OWN.xsd is the schema soapcpp2 writes for vboxweb.gsoap.

  vbox_schema.py check OWN.xsd WSDL_DIR VERSION...
      The conformance check: for each version, every described element has exactly the children
      (names, order, types, occurrences) of WSDL_DIR/vboxweb-VERSION.wsdl, every enumeration holds
      at least that version's values, and every operation is one of that WSDL. Exits 77 (skipped)
      when WSDL_DIR holds none of the WSDLs: they are VirtualBox's, not part of vmfest.
"""
import os
import sys
import xml.etree.ElementTree as ET

XSD = "http://www.w3.org/2001/XMLSchema"
WSDL = "http://schemas.xmlsoap.org/wsdl/"
VBOX = "http://www.virtualbox.org/"
SKIPPED = 77

# Children that only some versions have: element -> child -> the first version that has it. In
# every version that has it, it is required (VirtualBox marks optional children in the schema).
VERSION_RULES = {
    "IVirtualBox_createMachine": {"cipher": "7.0", "passwordId": "7.0", "password": "7.0",
                                  "platform": "7.1"},
}


def fail(message):
    sys.exit(f"vbox_schema.py: {message}")


def version_key(version):
    return tuple(int(part) for part in version.split("."))


def occurs(child):
    return (child.get("minOccurs", "1"), child.get("maxOccurs", "1"))


class Child:
    def __init__(self, name, type_, min_occurs, max_occurs):
        self.name, self.type, self.min, self.max = name, type_, min_occurs, max_occurs

    def key(self):
        return (self.name, self.type, self.min, self.max)

    def describe(self):
        return f"{self.name}:{self.type}[{self.min}..{self.max}]"


def read_own(path):
    """Elements (name -> [Child]) and enumerations (name -> [value]) of soapcpp2's schema."""
    schema = ET.parse(path).getroot()
    types = {t.get("name"): t for t in schema.findall(f"{{{XSD}}}complexType")}
    elements = {}
    for element in schema.findall(f"{{{XSD}}}element"):
        type_name = element.get("type", "").removeprefix("vbox:")
        declaration = types.get(type_name)
        if declaration is None:
            fail(f"{path}: element {element.get('name')} has no complexType {type_name}")
        elements[element.get("name")] = [
            Child(c.get("name"), c.get("type"), *occurs(c))
            for c in declaration.iter(f"{{{XSD}}}element")]
    enums = {t.get("name"): [e.get("value") for e in t.iter(f"{{{XSD}}}enumeration")]
             for t in schema.findall(f"{{{XSD}}}simpleType")}
    return elements, enums


def for_version(elements, version):
    """The described elements as `version` shapes them."""
    shaped = {}
    for name, children in elements.items():
        rules = VERSION_RULES.get(name, {})
        shaped[name] = []
        for child in children:
            since = rules.get(child.name)
            if since is None:
                shaped[name].append(child)
            elif version_key(version) >= version_key(since):
                shaped[name].append(Child(child.name, child.type, "1", child.max))
    return shaped


def read_wsdl(path):
    """Elements, enumerations and operation names of one of VirtualBox's WSDLs."""
    root = ET.parse(path).getroot()
    schema = root.find(f"{{{WSDL}}}types/{{{XSD}}}schema")
    if schema is None:
        fail(f"{path} has no wsdl:types/xsd:schema")
    elements = {}
    for element in schema.findall(f"{{{XSD}}}element"):
        sequence = element.find(f"{{{XSD}}}complexType/{{{XSD}}}sequence")
        children = [] if sequence is None else list(sequence)
        elements[element.get("name")] = [Child(c.get("name"), c.get("type"), *occurs(c))
                                         for c in children]
    enums = {t.get("name"): [e.get("value") for e in t.iter(f"{{{XSD}}}enumeration")]
             for t in schema.findall(f"{{{XSD}}}simpleType")}
    operations = {o.get("name") for o in root.iter(f"{{{WSDL}}}operation")}
    return elements, enums, operations


def check(own_path, wsdl_dir, versions):
    elements, enums = read_own(own_path)
    present = [v for v in versions if os.path.exists(os.path.join(wsdl_dir, f"vboxweb-{v}.wsdl"))]
    if not present:
        print(f"SKIPPED: none of VirtualBox's WSDLs (vboxweb-{{{','.join(versions)}}}.wsdl) is in "
              f"{wsdl_dir}; set VMFEST_VBOX_WSDL_DIR to check vboxweb.gsoap against them")
        return SKIPPED
    problems = []
    seen_values = {name: set() for name in enums}
    for version in present:
        real_elements, real_enums, operations = read_wsdl(os.path.join(wsdl_dir, f"vboxweb-{version}.wsdl"))
        for name, children in for_version(elements, version).items():
            real = real_elements.get(name)
            if real is None:
                problems.append(f"{version}: VirtualBox has no element {name}")
                continue
            if [c.key() for c in children] != [c.key() for c in real]:
                problems.append(f"{version}: {name} is described as ({', '.join(c.describe() for c in children)})"
                                f" but VirtualBox has ({', '.join(c.describe() for c in real)})")
            operation = name.removesuffix("Response")
            if not name.endswith("Fault") and operation not in operations:
                problems.append(f"{version}: VirtualBox has no operation {operation}")
        for name, values in enums.items():
            real = real_enums.get(name)
            if real is None:
                continue  # a type only newer versions have (the children check covers its use)
            seen_values[name].update(real)
            missing = [v for v in real if v not in values]
            if missing:
                problems.append(f"{version}: enumeration {name} lacks {', '.join(missing)}")
    for name, values in enums.items():
        unknown = [v for v in values if v not in seen_values[name]]
        if unknown and len(present) == len(versions):
            problems.append(f"enumeration {name}: {', '.join(unknown)} is in no version")
    for problem in problems:
        print(problem)
    checked = sum(len(for_version(elements, v)) for v in present)
    print(f"{len(problems)} problems; {checked} element shapes and {len(enums)} enumerations checked "
          f"against VirtualBox {', '.join(present)}"
          + (f" (missing: {', '.join(sorted(set(versions) - set(present)))})" if len(present) < len(versions) else ""))
    return 1 if problems else 0


def write_versions(own_path, out_dir, versions):
    elements, enums = read_own(own_path)
    os.makedirs(out_dir, exist_ok=True)
    for version in versions:
        ET.register_namespace("xsd", XSD)
        ET.register_namespace("vbox", VBOX)
        schema = ET.Element(f"{{{XSD}}}schema", {"targetNamespace": VBOX})
        for name, values in enums.items():
            simple = ET.SubElement(schema, f"{{{XSD}}}simpleType", {"name": name})
            restriction = ET.SubElement(simple, f"{{{XSD}}}restriction", {"base": "xsd:string"})
            for value in values:
                ET.SubElement(restriction, f"{{{XSD}}}enumeration", {"value": value})
        for name, children in for_version(elements, version).items():
            element = ET.SubElement(schema, f"{{{XSD}}}element", {"name": name})
            sequence = ET.SubElement(ET.SubElement(element, f"{{{XSD}}}complexType"), f"{{{XSD}}}sequence")
            for child in children:
                ET.SubElement(sequence, f"{{{XSD}}}element", {"name": child.name, "type": child.type,
                                                             "minOccurs": child.min, "maxOccurs": child.max})
        text = ET.tostring(schema, encoding="unicode")
        # The QName values (type="vbox:...", "xsd:...") need their prefixes declared on the root.
        if 'xmlns:vbox=' not in text:
            text = text.replace("<xsd:schema ", f'<xsd:schema xmlns:vbox="{VBOX}" ', 1)
        with open(os.path.join(out_dir, f"vbox-{version}.xsd"), "w", encoding="utf-8") as out:
            out.write('<?xml version="1.0" encoding="utf-8"?>\n')
            out.write(f"<!-- VirtualBox {version}'s shapes of vboxweb.gsoap, by vbox_schema.py -->\n")
            out.write(text + "\n")


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "versions":
        write_versions(sys.argv[2], sys.argv[3], sys.argv[4:])
    elif len(sys.argv) >= 5 and sys.argv[1] == "check":
        sys.exit(check(sys.argv[2], sys.argv[3], sys.argv[4:]))
    else:
        fail(__doc__)

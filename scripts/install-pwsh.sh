#!/usr/bin/env bash
# Installs PowerShell 7 (the .NET global tool `PowerShell`) and Pester 5 (the NuGet package `Pester`, whose tools/
# folder is the module) for the PowerShell module's tests. Both come from NuGet with pinned versions; idempotent.
# Needs the dotnet SDK. pwsh lands in ~/.dotnet/tools (test/helpers/pwsh.ts looks there when it is not on PATH);
# Pester in the user's module folder ~/.local/share/powershell/Modules, where pwsh finds it by default.
set -euo pipefail
PWSH_VERSION=7.6.9     # a later one may need a newer .NET than the SDK here
PESTER_VERSION=5.7.1
tools="$HOME/.dotnet/tools"
pwsh="$tools/pwsh"

if ! command -v dotnet >/dev/null; then
  echo "install-pwsh: the dotnet SDK is missing; PowerShell is installed as a .NET tool" >&2
  exit 1
fi
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

have=""
[[ -x "$pwsh" ]] && have="$("$pwsh" -NoProfile -NonInteractive -Command '$PSVersionTable.PSVersion.ToString()' 2>/dev/null || true)"
if [[ "$have" != "$PWSH_VERSION" ]]; then
  if [[ -n "$have" ]]; then dotnet tool uninstall --global PowerShell >/dev/null; fi
  dotnet tool install --global PowerShell --version "$PWSH_VERSION"
fi

modules="$HOME/.local/share/powershell/Modules"
dest="$modules/Pester/$PESTER_VERSION"
if [[ ! -f "$dest/Pester.psd1" ]]; then
  # A throwaway project whose only job is to make `dotnet restore` download the package (PackageDownload takes
  # an exact version and adds no reference), into a private package folder.
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  cat >"$work/fetch.csproj" <<XML
<Project Sdk="Microsoft.NET.Sdk">
  <PropertyGroup><TargetFramework>net$(dotnet --version | cut -d. -f1-2)</TargetFramework></PropertyGroup>
  <ItemGroup><PackageDownload Include="Pester" Version="[$PESTER_VERSION]" /></ItemGroup>
</Project>
XML
  dotnet restore "$work/fetch.csproj" --packages "$work/packages" >/dev/null
  mkdir -p "$modules/Pester"
  rm -rf "$dest.partial"
  cp -r "$work/packages/pester/$PESTER_VERSION/tools" "$dest.partial"
  mv "$dest.partial" "$dest"
fi
"$pwsh" -NoProfile -NonInteractive -Command "Import-Module Pester -RequiredVersion $PESTER_VERSION -ErrorAction Stop; 'pwsh ' + \$PSVersionTable.PSVersion + ', Pester ' + (Get-Module Pester).Version"

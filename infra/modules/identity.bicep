// The user-assigned managed identity the Function App runs as. It signs in to
// storage (host and handler), Application Insights, Microsoft Graph and
// SharePoint. Its Graph and SharePoint app roles are not ARM resources:
// infra/grant-permissions.sh grants them after `azd provision`.

@description('Name of the user-assigned managed identity.')
param name string

@description('Azure region.')
param location string

@description('Tags for the identity.')
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId

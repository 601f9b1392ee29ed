// profilesync on Azure: one resource group holding a Linux Function App on the
// Flex Consumption plan (the Go custom handler), its storage account (shared
// keys disabled), a user-assigned managed identity, Log Analytics and
// Application Insights. `azd up` deploys this file with main.parameters.json;
// infra/grant-permissions.sh then grants the identity its Graph and SharePoint
// app roles, which ARM cannot.

targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; names the resource group and seeds unique resource names.')
param environmentName string

@minLength(1)
@description('Azure region of every resource. It must offer the Flex Consumption plan (az functionapp list-flexconsumption-locations).')
@metadata({ azd: { type: 'location' } })
param location string

@minLength(1)
@description('SPO_SITE_URL: absolute URL of the SharePoint site whose library receives the import files, e.g. https://contoso.sharepoint.com/sites/hr.')
param siteUrl string

@description('SPO_FOLDER: site-relative folder or library receiving the import files (created if missing).')
param folder string = 'Shared Documents'

@description('SYNC_SCHEDULE: NCRONTAB schedule of the sync, in UTC (default: 02:00 every day).')
param schedule string = '0 0 2 * * *'

@description('CLEANUP_AFTER_DAYS: delete import files and job logs from the library after this many days; 0 keeps them all.')
param cleanupAfterDays string = '0'

@description('GRAPH_ENDPOINT: Microsoft Graph origin; change only for national clouds.')
param graphEndpoint string = 'https://graph.microsoft.com'

@description('Object id of the operator running azd (AZURE_PRINCIPAL_ID), given blob access to the state container; empty for none.')
param principalId string = ''

@description('Most instances the Function App may scale out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 4

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var stateContainerName = 'profilesync'
var statusQueueName = 'profilesync-status'
var deploymentContainerName = 'app-package'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity './modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-profilesync-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage './modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'stps${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    stateContainerName: stateContainerName
    statusQueueName: statusQueueName
  }
}

module monitoring './modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    applicationInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
  }
}

module rbac './modules/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    stateContainerName: stateContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    identityPrincipalId: identity.outputs.principalId
    operatorPrincipalId: principalId
  }
}

module functionApp './modules/functionapp.bicep' = {
  name: 'functionapp'
  scope: rg
  params: {
    name: 'func-profilesync-${resourceToken}'
    planName: 'plan-${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageBlobEndpoint: storage.outputs.blobEndpoint
    storageQueueEndpoint: storage.outputs.queueEndpoint
    deploymentContainerName: deploymentContainerName
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    maximumInstanceCount: maximumInstanceCount
    siteUrl: siteUrl
    folder: folder
    schedule: schedule
    graphEndpoint: graphEndpoint
    cleanupAfterDays: cleanupAfterDays
    stateContainerName: stateContainerName
    statusQueueName: statusQueueName
  }
  // The host starts as soon as the app exists; give it its storage roles first.
  dependsOn: [
    rbac
  ]
}

// azd saves these in .azure/<environment>/.env (see `azd env get-values`).
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_APPLICATION_INSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output PROFILESYNC_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output PROFILESYNC_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output PROFILESYNC_CONTAINER string = stateContainerName
